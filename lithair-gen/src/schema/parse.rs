//! Reads a schema's YAML tree into the checked [`Schema`], collecting every problem.
//!
//! The walk never stops at the first mistake: each check records a [`Diagnostic`] and
//! goes on, so a user fixes a whole file in one round. Names that other parts refer to
//! (models, roles) are collected first, so a `ref<…>` or a role can be checked where it
//! is written, with a "did you mean" drawn from what exists.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use super::diagnostic::Diagnostic;
use super::keys;
use super::model::*;
use super::names;
use super::yaml::{self, Node, NodeKind, Pos, Scalar, Span};

mod projections;

/// Paths the runtime serves itself; a model may not take them.
const RESERVED_PATHS: &[&str] = &[
    "/api/_audit",
    "/_cluster",
    "/_raft",
    "/health",
    "/ready",
    "/metrics",
    "/openapi.json",
];
/// Record metadata every model has; a field may not take these names.
const RESERVED_FIELDS: &[&str] = &["id", "created_at", "updated_at", "version"];
const SCALAR_TYPES: &[&str] = &[
    "string", "text", "bool", "int", "float", "uuid", "date", "datetime", "json", "enum",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Reads and checks a schema. On failure, every problem found, in source order.
pub fn check(source: &str) -> Result<Schema, Vec<Diagnostic>> {
    let root = match yaml::parse(source) {
        Ok(Some(root)) => root,
        Ok(None) => {
            return Err(vec![Diagnostic::new(
                Span {
                    start: Pos { line: 1, col: 1 },
                    width: 1,
                },
                "the schema is empty",
            )
            .with_help(
                "a schema needs at least `service: { name: … }` and `models:`",
            )])
        }
        Err(e) => {
            return Err(vec![Diagnostic::new(
                Span {
                    start: e.pos,
                    width: 1,
                },
                format!("YAML syntax error: {}", e.message),
            )])
        }
    };
    let mut c = Checker::default();
    let schema = c.schema(&root);
    if c.diags.is_empty() {
        if let Some(schema) = schema {
            return Ok(schema);
        }
    }
    c.diags.sort_by_key(|d| d.span.start);
    c.diags.dedup();
    Err(c.diags)
}

#[derive(Default)]
struct Checker {
    diags: Vec<Diagnostic>,
    models: Vec<String>,
    roles: Vec<String>,
}

/// A mapping's entries that passed the key checks.
struct Entries<'n> {
    map: BTreeMap<&'n str, (&'n Node, &'n Node)>,
    at: Span,
}

impl<'n> Entries<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.map.get(key).map(|(_, v)| *v)
    }
}

/// The longest `cache.ttl`: a year, as HTTP caches take it at most.
const MAX_TTL: u64 = 31_536_000;
/// The most versions `lifecycle.versioned` keeps readable.
const MAX_VERSIONS: u64 = 100_000;

impl Checker {
    fn err(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Checks that `node` is a mapping with known keys only.
    fn mapping<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: &[&str],
        unsupported: &[(&str, &str)],
    ) -> Option<Entries<'n>> {
        let NodeKind::Map(entries) = &node.kind else {
            self.err(Diagnostic::new(
                node.span,
                format!("{what} must be a mapping, found {}", node.describe()),
            ));
            return None;
        };
        let mut map = BTreeMap::new();
        for (k, v) in entries {
            let Some(key) = k
                .as_str()
                .filter(|_| matches!(k.scalar(), Some(Scalar::Str(_))))
            else {
                self.err(Diagnostic::new(
                    k.span,
                    format!("keys in {what} must be names, found {}", k.describe()),
                ));
                continue;
            };
            if let Some((_, why)) = unsupported.iter().find(|(u, _)| *u == key) {
                self.err(
                    Diagnostic::new(k.span, format!("\"{key}\" is not supported yet"))
                        .with_help(why.to_string()),
                );
                continue;
            }
            if !allowed.contains(&key) {
                let mut d = Diagnostic::new(k.span, format!("unknown key \"{key}\" in {what}"))
                    .with_suggestion(key, allowed.iter().copied());
                if d.help.is_none() {
                    d = d.with_help(format!("expected one of: {}", allowed.join(", ")));
                }
                self.err(d);
                continue;
            }
            if map.insert(key, (k, v)).is_some() {
                self.err(Diagnostic::new(
                    k.span,
                    format!("\"{key}\" is given twice in {what}"),
                ));
            }
        }
        Some(Entries { map, at: node.span })
    }

    /// Reports a missing required key at `at`.
    fn missing(&mut self, at: Span, what: &str, key: &str, help: &str) {
        self.err(
            Diagnostic::new(at, format!("{what} is missing \"{key}\"")).with_help(help.to_string()),
        );
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match node.scalar() {
            Some(Scalar::Str(s)) => Some(s.to_string()),
            _ => {
                self.err(Diagnostic::new(
                    node.span,
                    format!("{what} must be a string, found {}", node.describe()),
                ));
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.scalar() {
            Some(Scalar::Bool(b)) => Some(b),
            _ => {
                self.err(
                    Diagnostic::new(
                        node.span,
                        format!("{what} must be true or false, found {}", node.describe()),
                    )
                    .with_help("write `true` or `false` without quotes"),
                );
                None
            }
        }
    }

    fn count(&mut self, node: &Node, what: &str, min: u64) -> Option<u64> {
        match node.scalar() {
            Some(Scalar::Int(i)) if i >= min as i64 => Some(i as u64),
            Some(Scalar::Int(i)) => {
                self.err(Diagnostic::new(
                    node.span,
                    format!("{what} must be at least {min}, found {i}"),
                ));
                None
            }
            _ => {
                self.err(Diagnostic::new(
                    node.span,
                    format!(
                        "{what} must be a whole number of at least {min}, found {}",
                        node.describe()
                    ),
                ));
                None
            }
        }
    }

    fn number(&mut self, node: &Node, what: &str) -> Option<f64> {
        match node.scalar() {
            Some(Scalar::Int(i)) => Some(i as f64),
            Some(Scalar::Float(f)) if f.is_finite() => Some(f),
            _ => {
                self.err(Diagnostic::new(
                    node.span,
                    format!("{what} must be a number, found {}", node.describe()),
                ));
                None
            }
        }
    }

    /// A list of strings; a lone string is taken as a list of one.
    fn string_list(&mut self, node: &Node, what: &str) -> Vec<(String, Span)> {
        let items: Vec<&Node> = match &node.kind {
            NodeKind::Seq(items) => items.iter().collect(),
            NodeKind::Scalar { .. } => vec![node],
            NodeKind::Map(_) => {
                self.err(Diagnostic::new(
                    node.span,
                    format!("{what} must be a list, found a mapping"),
                ));
                return Vec::new();
            }
        };
        items
            .into_iter()
            .filter_map(|n| {
                self.string(n, &format!("each item of {what}"))
                    .map(|s| (s, n.span))
            })
            .collect()
    }

    /// Role names checked against the declared roles.
    /// A list of declared roles (and `public`); `owner` only where `owner` is true (a
    /// model's read, update and delete permissions).
    fn role_list(&mut self, node: &Node, what: &str, owner: bool) -> Vec<(String, Span)> {
        let mut out: Vec<(String, Span)> = Vec::new();
        for (role, span) in self.string_list(node, what) {
            if role == OWNER && !owner {
                self.err(
                    Diagnostic::new(span, format!("the pseudo-role \"owner\" cannot be used in {what}"))
                        .with_help("`owner` grants a model's read, update or delete on the caller's own records; it goes in the model's `permissions`, next to `owner_field`"),
                );
            } else if role != "public" && role != OWNER && !self.roles.contains(&role) {
                let candidates: Vec<String> = self
                    .roles
                    .iter()
                    .cloned()
                    .chain(["public".to_string()])
                    .collect();
                self.err(
                    Diagnostic::new(span, format!("unknown role \"{role}\" in {what}"))
                        .with_suggestion(&role, candidates.iter().map(String::as_str))
                        .with_help_if_none(format!(
                            "declare it under `roles:` (declared: {})",
                            if self.roles.is_empty() {
                                "none".to_string()
                            } else {
                                self.roles.join(", ")
                            }
                        )),
                );
            } else if out.iter().any(|(r, _)| *r == role) {
                self.err(Diagnostic::new(
                    span,
                    format!("role \"{role}\" is listed twice in {what}"),
                ));
            } else {
                out.push((role, span));
            }
        }
        out
    }

    fn schema(&mut self, root: &Node) -> Option<Schema> {
        let top = self.mapping(root, "the schema", keys::TOP, keys::TOP_UNSUPPORTED)?;

        // Names first: every ref and role below is checked against them.
        if let Some(NodeKind::Map(models)) = top.get("models").map(|m| &m.kind) {
            self.models = models
                .iter()
                .filter_map(|(k, _)| k.as_str().map(String::from))
                .collect();
        }
        if let Some(NodeKind::Seq(roles)) = top.get("roles").map(|r| &r.kind) {
            for r in roles {
                let name = match &r.kind {
                    NodeKind::Map(e) => e
                        .iter()
                        .find(|(k, _)| k.as_str() == Some("name"))
                        .and_then(|(_, v)| v.as_str()),
                    _ => r.as_str(),
                };
                // The built-in names are refused below; they are not declared roles.
                if let Some(n) = name.filter(|n| *n != "public" && *n != OWNER) {
                    self.roles.push(n.to_string());
                }
            }
        }

        let service = match top.get("service") {
            Some(s) => self.service(s),
            None => {
                self.missing(
                    top.at,
                    "the schema",
                    "service",
                    "add `service: { name: my-service }`",
                );
                None
            }
        };
        let roles = top
            .get("roles")
            .map(|r| self.roles_decl(r))
            .unwrap_or_default();
        let models = match top.get("models") {
            Some(m) => self.models_decl(m),
            None => {
                self.missing(
                    top.at,
                    "the schema",
                    "models",
                    "add `models:` with at least one model",
                );
                None
            }
        };
        let audit = top.get("audit").and_then(|a| {
            let e = self.mapping(a, "audit", keys::AUDIT, &[])?;
            let read = e
                .get("read")
                .map(|r| {
                    self.role_list(r, "the audit's read permission", false)
                        .into_iter()
                        .map(|(r, _)| r)
                        .collect()
                })
                .unwrap_or_default();
            Some(Audit { read })
        });
        let projections = match (top.get("projections"), &models) {
            (Some(p), Some(models)) => self.projections_decl(p, models),
            _ => Vec::new(),
        };
        Some(Schema {
            service: service?,
            roles,
            models: models?,
            audit,
            projections,
        })
    }

    fn service(&mut self, node: &Node) -> Option<Service> {
        if let Some(Scalar::Str(name)) = node.scalar() {
            self.err(
                Diagnostic::new(
                    node.span,
                    format!("service must be a mapping, found {}", node.describe()),
                )
                .with_help(format!("write `service: {{ name: {name} }}`")),
            );
            return None;
        }
        let e = self.mapping(node, "service", keys::SERVICE, &[])?;
        let description = e
            .get("description")
            .and_then(|d| self.string(d, "service.description"));
        let Some(name_node) = e.get("name") else {
            self.missing(
                e.at,
                "service",
                "name",
                "add `name: my-service` (lowercase; it names the crate and binary)",
            );
            return None;
        };
        let name = self.string(name_node, "service.name")?;
        let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid {
            let fixed = heck::ToKebabCase::to_kebab_case(name.as_str());
            self.err(
                Diagnostic::new(name_node.span, format!("service name \"{name}\" is not a valid crate name"))
                    .with_help(format!("use lowercase letters, digits, `-` and `_`, starting with a letter, e.g. \"{fixed}\"")),
            );
            return None;
        }
        if [
            "std",
            "core",
            "alloc",
            "test",
            "proc_macro",
            "lithair-runtime",
            "lithair_runtime",
        ]
        .contains(&name.as_str())
        {
            self.err(Diagnostic::new(
                name_node.span,
                format!("service name \"{name}\" clashes with a crate the service uses"),
            ));
            return None;
        }
        let version = e.get("version").and_then(|v| {
            let Some(Scalar::Str(text)) = v.scalar() else {
                self.err(
                    Diagnostic::new(
                        v.span,
                        format!("service.version must be a string, found {}", v.describe()),
                    )
                    .with_help("quote it, e.g. `version: \"1.2.0\"`"),
                );
                return None;
            };
            let semver = regex::Regex::new(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)*$")
                .is_ok_and(|re| re.is_match(text));
            if !semver {
                self.err(
                    Diagnostic::new(
                        v.span,
                        format!("service.version \"{text}\" is not a version like \"1.2.0\""),
                    )
                    .with_help("write MAJOR.MINOR.PATCH, with an optional `-pre` or `+build` part"),
                );
                return None;
            }
            Some(text.to_string())
        });
        Some(Service {
            name,
            description,
            version,
        })
    }

    fn roles_decl(&mut self, node: &Node) -> Vec<Role> {
        let NodeKind::Seq(items) = &node.kind else {
            self.err(
                Diagnostic::new(
                    node.span,
                    format!("roles must be a list, found {}", node.describe()),
                )
                .with_help("write `roles: [viewer, editor, admin]`"),
            );
            return Vec::new();
        };
        let mut out: Vec<Role> = Vec::new();
        let mut spans = Vec::new();
        for item in items {
            let (name, name_span, inherits) = match &item.kind {
                NodeKind::Map(_) => {
                    let Some(e) = self.mapping(item, "a role", keys::ROLE, &[]) else {
                        continue;
                    };
                    let Some(n) = e.get("name") else {
                        self.missing(
                            e.at,
                            "a role",
                            "name",
                            "write `{ name: admin, inherits: [editor] }`",
                        );
                        continue;
                    };
                    let Some(name) = self.string(n, "a role's name") else {
                        continue;
                    };
                    let inherits = match e.get("inherits") {
                        Some(i) => self.string_list(i, &format!("the roles \"{name}\" inherits")),
                        None => Vec::new(),
                    };
                    (name, n.span, inherits)
                }
                _ => {
                    let Some(name) = self.string(item, "a role") else {
                        continue;
                    };
                    (name, item.span, Vec::new())
                }
            };
            if name == "public" || name == OWNER {
                let help = if name == "public" {
                    "`public` always means anonymous callers; remove it from `roles`"
                } else {
                    "`owner` is the pseudo-role of a record's owner (see `owner_field`); name the role otherwise"
                };
                self.err(
                    Diagnostic::new(
                        name_span,
                        format!("\"{name}\" is built in and cannot be declared"),
                    )
                    .with_help(help),
                );
                continue;
            }
            if !names::is_snake(&name) {
                self.err(
                    Diagnostic::new(
                        name_span,
                        format!("role name \"{name}\" must be snake_case"),
                    )
                    .with_help(format!("e.g. \"{}\"", names::snake(&name))),
                );
                continue;
            }
            if out.iter().any(|r| r.name == name) {
                self.err(Diagnostic::new(
                    name_span,
                    format!("role \"{name}\" is declared twice"),
                ));
                continue;
            }
            let mut parents = Vec::new();
            for (parent, span) in inherits {
                if !self.roles.contains(&parent) || parent == name {
                    self.err(
                        Diagnostic::new(
                            span,
                            format!("role \"{name}\" inherits from unknown role \"{parent}\""),
                        )
                        .with_suggestion(
                            &parent,
                            self.roles.iter().map(String::as_str).filter(|r| *r != name),
                        ),
                    );
                } else {
                    parents.push(parent);
                }
            }
            spans.push(name_span);
            out.push(Role {
                name,
                inherits: parents,
            });
        }
        // Inheritance must not loop.
        for (i, role) in out.iter().enumerate() {
            let mut seen = HashSet::new();
            let mut stack = role.inherits.clone();
            while let Some(r) = stack.pop() {
                if r == role.name {
                    self.diags.push(Diagnostic::new(
                        spans[i],
                        format!(
                            "role \"{}\" inherits from itself through a cycle",
                            role.name
                        ),
                    ));
                    break;
                }
                if seen.insert(r.clone()) {
                    if let Some(p) = out.iter().find(|x| x.name == r) {
                        stack.extend(p.inherits.iter().cloned());
                    }
                }
            }
        }
        out
    }

    fn models_decl(&mut self, node: &Node) -> Option<Vec<Model>> {
        let NodeKind::Map(entries) = &node.kind else {
            self.err(Diagnostic::new(
                node.span,
                format!(
                    "models must be a mapping of model names, found {}",
                    node.describe()
                ),
            ));
            return None;
        };
        if entries.is_empty() {
            self.err(Diagnostic::new(node.span, "models is empty").with_help("declare at least one model, e.g. `Product: { fields: { name: { type: string } } }`"));
            return None;
        }
        let mut models = Vec::new();
        let mut paths: Vec<(String, String, usize)> = Vec::new();
        let mut seen = HashSet::new();
        for (k, v) in entries {
            let Some(name) = self.string(k, "a model name") else {
                continue;
            };
            if !seen.insert(name.clone()) {
                self.err(Diagnostic::new(
                    k.span,
                    format!("model \"{name}\" is declared twice"),
                ));
                continue;
            }
            if !names::is_pascal(&name) {
                self.err(
                    Diagnostic::new(k.span, format!("model name \"{name}\" must be PascalCase"))
                        .with_help(format!("rename it \"{}\"", names::pascal(&name))),
                );
                continue;
            }
            // The snake_case name becomes a module and file name: it must be an identifier, and one per model.
            let snake = names::snake(&name);
            if names::RAW_KEYWORDS.contains(&snake.as_str())
                || names::FORBIDDEN_KEYWORDS.contains(&snake.as_str())
            {
                self.err(
                    Diagnostic::new(k.span, format!("model name \"{name}\" cannot be used: its module name `{snake}` is a Rust keyword"))
                        .with_help(format!("pick another name, e.g. \"{name}Item\"")),
                );
                continue;
            }
            if snake == "handlers" {
                self.err(
                    Diagnostic::new(k.span, format!("model name \"{name}\" cannot be used: module `handlers` is taken by the generated code"))
                        .with_help(format!("pick another name, e.g. \"{name}Item\"")),
                );
                continue;
            }
            if let Some(other) = models.iter().find(|m: &&Model| m.snake == snake) {
                self.err(Diagnostic::new(
                    k.span,
                    format!("models \"{}\" and \"{name}\" would both be generated as src/generated/{snake}.rs", other.name),
                ).with_help("rename one of them"));
                continue;
            }
            if let Some(model) = self.model(&name, k, v) {
                let clash = paths.iter().find(|(p, _, _)| {
                    *p == model.path
                        || p.starts_with(&format!("{}/", model.path))
                        || model.path.starts_with(&format!("{p}/"))
                });
                if let Some((p, other, line)) = clash {
                    let at = v_path_span(v).unwrap_or(k.span);
                    self.err(Diagnostic::new(
                        at,
                        if *p == model.path {
                            format!("model \"{name}\" uses path \"{}\", which model \"{other}\" (line {line}) already uses", model.path)
                        } else {
                            format!("path \"{}\" of model \"{name}\" overlaps path \"{p}\" of model \"{other}\" (line {line})", model.path)
                        },
                    ).with_help("give each model its own `path`"));
                }
                paths.push((model.path.clone(), name.clone(), k.span.start.line));
                models.push(model);
            }
        }
        Some(models)
    }

    fn model(&mut self, name: &str, key: &Node, node: &Node) -> Option<Model> {
        let what = format!("model \"{name}\"");
        let e = self.mapping(node, &what, keys::MODEL, keys::MODEL_UNSUPPORTED)?;
        let snake = names::snake(name);
        let path = match e.get("path") {
            Some(p) => self.model_path(p, name),
            None => Some(format!("/api/{}", names::plural(&snake))),
        };
        let description = e
            .get("description")
            .and_then(|d| self.string(d, &format!("{what}.description")));
        let operations = match e.get("operations") {
            None => Operation::ALL.to_vec(),
            Some(ops) => {
                let mut out = Vec::new();
                for (op, span) in self.string_list(ops, &format!("the operations of {what}")) {
                    match Operation::ALL.iter().find(|o| o.as_str() == op) {
                        Some(o) if out.contains(o) => self.err(Diagnostic::new(
                            span,
                            format!("operation \"{op}\" is listed twice"),
                        )),
                        Some(o) => out.push(*o),
                        None => self.err(
                            Diagnostic::new(span, format!("unknown operation \"{op}\""))
                                .with_suggestion(&op, Operation::ALL.iter().map(|o| o.as_str()))
                                .with_help_if_none(
                                    "operations are: list, get, create, update, patch, delete",
                                ),
                        ),
                    }
                }
                out.sort();
                out
            }
        };
        let (permissions, owner_uses) = e
            .get("permissions")
            .map(|p| self.permissions(p, name, &operations))
            .unwrap_or_default();
        let cache = e.get("cache").and_then(|c| self.cache(c, &what));
        let lifecycle = e
            .get("lifecycle")
            .map(|l| self.lifecycle(l, &what))
            .unwrap_or_default();
        let snapshot_every = e.get("persistence").and_then(|p| {
            let pe = self.mapping(
                p,
                &format!("the persistence of {what}"),
                keys::PERSISTENCE,
                &[],
            )?;
            pe.get("snapshot_every")
                .and_then(|s| self.count(s, "snapshot_every", 1))
        });
        let fields = match e.get("fields") {
            Some(f) => self.fields(f, name),
            None => {
                self.missing(
                    key.span,
                    &what,
                    "fields",
                    "add `fields:` with at least one field",
                );
                None
            }
        };
        let actions = e
            .get("actions")
            .map(|a| self.actions(a, name))
            .unwrap_or_default();
        let mut fields = fields?;
        // A model with a history serves `{id}/history` and `{id}/versions/{v}`: no record
        // action may take those paths.
        if e.map.contains_key("lifecycle") {
            if let Some((_, list)) = e.map.get("actions") {
                self.history_paths(list, name);
            }
        }
        let owner_field = self.owner_field(e.map.get("owner_field"), name, &mut fields);
        // (A bad `owner_field` has its own error.)
        if !e.map.contains_key("owner_field") {
            for span in owner_uses {
                self.err(
                    Diagnostic::new(span, format!("the pseudo-role \"owner\" needs an `owner_field` on model \"{name}\""))
                        .with_help("add `owner_field: <a string field>`: the server fills it with the creating caller's subject, and `owner` grants the operation on those records"),
                );
            }
        }
        let renamed_from = e.get("renamed_from").and_then(|r| {
            let old = self.string(r, &format!("renamed_from of {what}"))?;
            let problem = if !names::is_pascal(&old) {
                Some(format!("renamed_from of {what} must be the model's former PascalCase name, found \"{old}\""))
            } else if old == name {
                Some(format!("{what} is renamed from its own name"))
            } else if self.models.contains(&old) {
                Some(format!("{what} is renamed from \"{old}\", which is still a model"))
            } else {
                None
            };
            match problem {
                Some(p) => {
                    self.err(Diagnostic::new(r.span, p).with_help(
                        "write the name the model had before; its records and events are then read as this model's",
                    ));
                    None
                }
                None => Some(old),
            }
        });
        Some(Model {
            name: name.to_string(),
            snake,
            path: path?,
            description,
            operations,
            permissions,
            owner_field,
            lifecycle,
            cache,
            snapshot_every,
            fields,
            actions,
            renamed_from,
        })
    }

    /// `lifecycle:` of a model.
    fn lifecycle(&mut self, node: &Node, what: &str) -> Lifecycle {
        let what = format!("the lifecycle of {what}");
        let Some(e) = self.mapping(node, &what, keys::LIFECYCLE, &[]) else {
            return Lifecycle::default();
        };
        let audited = e
            .get("audited")
            .and_then(|a| self.boolean(a, &format!("audited of {what}")))
            .unwrap_or(false);
        let versioned = e
            .get("versioned")
            .and_then(|v| self.count(v, "versioned", 1))
            .filter(|n| {
                let ok = *n <= MAX_VERSIONS;
                if !ok {
                    let span = e.map["versioned"].1.span;
                    self.err(
                        Diagnostic::new(span, format!("versioned {n} is more than {MAX_VERSIONS}"))
                            .with_help("every version is rebuilt from the record's events when asked; keep N to what readers need"),
                    );
                }
                ok
            });
        Lifecycle { audited, versioned }
    }

    /// Refuses record actions at `{id}/history` and `{id}/versions/...`.
    fn history_paths(&mut self, actions: &Node, model: &str) {
        let NodeKind::Map(entries) = &actions.kind else {
            return;
        };
        for (name, body) in entries {
            let NodeKind::Map(keys) = &body.kind else {
                continue;
            };
            let Some((_, path)) = keys.iter().find(|(k, _)| k.as_str() == Some("path")) else {
                continue;
            };
            let Some(p) = path.as_str() else { continue };
            let tail = p.strip_prefix("{id}/").unwrap_or("");
            if tail == "history" || tail == "versions" || tail.starts_with("versions/") {
                self.err(
                    Diagnostic::new(path.span, format!(
                        "action \"{}\" of model \"{model}\" takes the path \"{p}\", which its lifecycle serves",
                        name.as_str().unwrap_or("?")
                    ))
                    .with_help("a model with `lifecycle` answers `{id}/history` and `{id}/versions/{v}`; give the action another path"),
                );
            }
        }
    }

    /// `cache:` of a model.
    fn cache(&mut self, node: &Node, what: &str) -> Option<Cache> {
        let what = format!("the cache of {what}");
        let e = self.mapping(node, &what, keys::CACHE, &[])?;
        let Some(ttl) = e.get("ttl") else {
            self.missing(
                e.at,
                &what,
                "ttl",
                "add e.g. `ttl: 60` (seconds an answer may be reused)",
            );
            return None;
        };
        let ttl = self.count(ttl, "ttl", 1)?;
        if ttl > MAX_TTL {
            self.err(
                Diagnostic::new(
                    e.map["ttl"].1.span,
                    format!("ttl {ttl} is more than a year"),
                )
                .with_help(format!("caches keep an answer at most {MAX_TTL} seconds")),
            );
            return None;
        }
        Some(Cache { ttl })
    }

    /// `owner_field:` of `model`: the name of one of its `string` fields, which is then
    /// kept indexed (an owner's list reads its index).
    fn owner_field(
        &mut self,
        entry: Option<&(&Node, &Node)>,
        model: &str,
        fields: &mut [Field],
    ) -> Option<String> {
        let (_, node) = entry?;
        let name = self.string(node, &format!("the owner_field of model \"{model}\""))?;
        let Some(field) = fields.iter_mut().find(|f| f.name == name) else {
            self.err(
                Diagnostic::new(
                    node.span,
                    format!("owner_field \"{name}\" is not a field of model \"{model}\""),
                )
                .with_suggestion(&name, fields.iter().map(|f| f.name.as_str()))
                .with_help_if_none(format!(
                    "add a field `{name}: string`, or name one of: {}",
                    fields
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            );
            return None;
        };
        if field.ty != FieldType::String {
            self.err(
                Diagnostic::new(node.span, format!("owner_field \"{name}\" of model \"{model}\" is {}, but an owner is a string", field.ty.spelling()))
                    .with_help("the server fills the owner field with the caller's subject (a token name or a JWT `sub`): make it `type: string`"),
            );
            return None;
        }
        field.indexed = true;
        Some(name)
    }

    fn model_path(&mut self, node: &Node, model: &str) -> Option<String> {
        let path = self.string(node, &format!("the path of model \"{model}\""))?;
        let segments_ok = path.len() > 1
            && path.starts_with('/')
            && !path.ends_with('/')
            && path[1..].split('/').all(|s| {
                !s.is_empty()
                    && s.chars().all(|c| {
                        c.is_ascii_lowercase()
                            || c.is_ascii_digit()
                            || c == '_'
                            || c == '-'
                            || c == '.'
                    })
            });
        if !segments_ok {
            self.err(
                Diagnostic::new(node.span, format!("path \"{path}\" of model \"{model}\" is not a valid collection path"))
                    .with_help("write it like `/api/products`: starting with `/`, lowercase segments, no trailing `/`, no `{id}`"),
            );
            return None;
        }
        if let Some(r) = RESERVED_PATHS
            .iter()
            .find(|r| path == **r || path.starts_with(&format!("{r}/")))
        {
            self.err(Diagnostic::new(
                node.span,
                format!("path \"{path}\" is reserved by the runtime (\"{r}\")"),
            ));
            return None;
        }
        Some(path)
    }

    /// A model's permissions, and where they name the pseudo-role `owner`.
    fn permissions(
        &mut self,
        node: &Node,
        model: &str,
        ops: &[Operation],
    ) -> (Permissions, Vec<Span>) {
        let Some(e) = self.mapping(
            node,
            &format!("the permissions of model \"{model}\""),
            keys::PERMISSIONS,
            &[],
        ) else {
            return Default::default();
        };
        let mut p = Permissions::default();
        let mut owner_uses = Vec::new();
        for (key, (k, v)) in &e.map {
            let covers: &[Operation] = match *key {
                "read" => &[Operation::List, Operation::Get],
                "create" => &[Operation::Create],
                "update" => &[Operation::Update, Operation::Patch],
                _ => &[Operation::Delete],
            };
            if !covers.iter().any(|o| ops.contains(o)) {
                self.err(
                    Diagnostic::new(k.span, format!("permission \"{key}\" is set but model \"{model}\" has no operation it governs"))
                        .with_help(format!(
                            "enable {} in `operations`, or remove this line",
                            covers.iter().map(|o| format!("\"{}\"", o.as_str())).collect::<Vec<_>>().join(" or ")
                        )),
                );
                continue;
            }
            let what = format!("permission \"{key}\" of model \"{model}\"");
            let listed = self.role_list(v, &what, *key != "create");
            owner_uses.extend(
                listed
                    .iter()
                    .filter(|(r, _)| r == OWNER)
                    .map(|(_, span)| *span),
            );
            let roles: Vec<String> = listed.into_iter().map(|(r, _)| r).collect();
            match *key {
                "read" => p.read = roles,
                "create" => p.create = roles,
                "update" => p.update = roles,
                _ => p.delete = roles,
            }
        }
        (p, owner_uses)
    }

    fn fields(&mut self, node: &Node, model: &str) -> Option<Vec<Field>> {
        let NodeKind::Map(entries) = &node.kind else {
            self.err(Diagnostic::new(
                node.span,
                format!(
                    "the fields of model \"{model}\" must be a mapping, found {}",
                    node.describe()
                ),
            ));
            return None;
        };
        if entries.is_empty() {
            self.err(Diagnostic::new(
                node.span,
                format!("model \"{model}\" has no fields"),
            ));
            return None;
        }
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut enum_names = Vec::new();
        for (k, v) in entries {
            let Some(name) = self.string(k, "a field name") else {
                continue;
            };
            if !seen.insert(name.clone()) {
                let first = entries
                    .iter()
                    .find(|(f, _)| f.as_str() == Some(name.as_str()))
                    .map(|(f, _)| f.span.start.line)
                    .unwrap_or(0);
                self.err(Diagnostic::new(
                    k.span,
                    format!("field \"{name}\" is declared twice in model \"{model}\" (first on line {first})"),
                ));
                continue;
            }
            if RESERVED_FIELDS.contains(&name.as_str()) {
                self.err(
                    Diagnostic::new(k.span, format!("field name \"{name}\" is reserved"))
                        .with_help("every record already has `id` (uuid), `created_at`, `updated_at` and `version`; pick another name"),
                );
                continue;
            }
            if FORBIDDEN_NAME.contains(&name.as_str())
                || names::FORBIDDEN_KEYWORDS.contains(&name.as_str())
            {
                self.err(Diagnostic::new(k.span, format!("field name \"{name}\" cannot be used: it is a Rust keyword that cannot be escaped")));
                continue;
            }
            if !names::is_snake(&name) {
                self.err(
                    Diagnostic::new(k.span, format!("field name \"{name}\" must be snake_case"))
                        .with_help(format!("rename it \"{}\"", names::snake(&name))),
                );
                continue;
            }
            if let Some(f) = self.field(model, &name, k, v) {
                if has_enum(&f.ty) {
                    self.enum_name_clash(model, &name, k, &mut enum_names);
                }
                out.push(f);
            }
        }
        self.renames(entries, &out, model);
        Some(out)
    }

    /// Checks the fields' `renamed_from`: a former name is no current field's, and no
    /// two fields were renamed from one name.
    fn renames(&mut self, entries: &[(Node, Node)], fields: &[Field], model: &str) {
        for (i, f) in fields.iter().enumerate() {
            let Some(old) = &f.renamed_from else { continue };
            let at = entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(f.name.as_str()))
                .map(|(k, _)| k.span);
            let Some(at) = at else { continue };
            if fields.iter().any(|g| g.name == *old) {
                self.err(
                    Diagnostic::new(at, format!("field \"{}\" of model \"{model}\" is renamed from \"{old}\", which is still a field", f.name))
                        .with_help("a renamed field's former name must be gone from the model"),
                );
            } else if let Some(other) = fields[..i]
                .iter()
                .find(|g| g.renamed_from.as_deref() == Some(old))
            {
                self.err(Diagnostic::new(
                    at,
                    format!("fields \"{}\" and \"{}\" of model \"{model}\" are both renamed from \"{old}\"", other.name, f.name),
                ));
            }
        }
    }

    /// An enum field becomes a Rust enum `<Model><Field>`; it must not clash with the
    /// generated actions trait, the handlers struct, another model or another enum of the
    /// model.
    fn enum_name_clash(&mut self, model: &str, field: &str, key: &Node, seen: &mut Vec<String>) {
        let ty = format!("{model}{}", names::pascal(field));
        let generated = [format!("{model}Actions"), format!("{model}Handlers")];
        let clash = if generated.contains(&ty) || self.models.contains(&ty) {
            Some(format!("a generated item or model is already named `{ty}`"))
        } else if seen.contains(&ty) {
            Some(format!("another enum field of {model} also becomes `{ty}`"))
        } else {
            None
        };
        match clash {
            Some(why) => self.err(
                Diagnostic::new(key.span, format!("enum field \"{model}.{field}\" would generate the Rust enum `{ty}`, but {why}"))
                    .with_help("rename the field"),
            ),
            None => seen.push(ty),
        }
    }

    fn field(&mut self, model: &str, name: &str, key: &Node, node: &Node) -> Option<Field> {
        let what = format!("field \"{model}.{name}\"");
        // `name: string` is shorthand for `name: { type: string }`.
        let e = match &node.kind {
            NodeKind::Scalar { .. } => None,
            _ => Some(self.mapping(node, &what, keys::FIELD, &[])?),
        };
        let type_node = match &e {
            None => node,
            Some(e) => match e.get("type") {
                Some(t) => t,
                None => {
                    self.missing(key.span, &what, "type", "add e.g. `type: string` (string, text, bool, int, float, uuid, date, datetime, json, enum, list<T>, ref<Model>)");
                    return None;
                }
            },
        };
        let get = |k: &str| e.as_ref().and_then(|e| e.get(k));
        let ty_text = self.string(type_node, &format!("the type of {what}"))?;
        let values_node = get("values");
        let Some(ty) = self.field_type(&ty_text, type_node, values_node, &what) else {
            // Still report unknown keys under `validate:`.
            if let Some(v) = get("validate") {
                self.mapping(
                    v,
                    &format!("the validate rules of {what}"),
                    keys::VALIDATE,
                    &[],
                );
            }
            return None;
        };
        if values_node.is_some()
            && !matches!(ty, FieldType::Enum { .. })
            && !matches!(&ty, FieldType::List { item } if matches!(**item, FieldType::Enum { .. }))
        {
            let k = e
                .as_ref()
                .and_then(|e| e.map.get("values"))
                .map(|(k, _)| k.span)
                .unwrap_or(node.span);
            self.err(Diagnostic::new(
                k,
                format!(
                    "\"values\" only applies to enum fields, but {what} is {}",
                    ty.spelling()
                ),
            ));
        }
        let flag = |this: &mut Self, k: &str| {
            get(k)
                .and_then(|n| this.boolean(n, &format!("{k} of {what}")))
                .unwrap_or(false)
        };
        let optional = flag(self, "optional");
        let unique = flag(self, "unique");
        let indexed = flag(self, "indexed");
        let immutable = flag(self, "immutable");
        for (k, on) in [("unique", unique), ("indexed", indexed)] {
            if on
                && matches!(
                    ty,
                    FieldType::Json | FieldType::List { .. } | FieldType::Text
                )
            {
                let at = e
                    .as_ref()
                    .and_then(|e| e.map.get(k))
                    .map(|(k, _)| k.span)
                    .unwrap_or(node.span);
                self.err(Diagnostic::new(at, format!("\"{k}\" cannot apply to {what} of type {}", ty.spelling())).with_help("unique and indexed apply to string, int, float, bool, uuid, date, datetime, enum and ref fields"));
            }
        }
        let description =
            get("description").and_then(|d| self.string(d, &format!("the description of {what}")));
        let rules = get("validate")
            .map(|v| self.rules(v, &ty, &what))
            .unwrap_or_default();
        let default = match get("default") {
            None => None,
            Some(d) => {
                let mut problems = Vec::new();
                check_value(&ty, d, &mut problems);
                if matches!(d.scalar(), Some(Scalar::Null)) && !optional {
                    problems.push((
                        d.span,
                        "null is only allowed when the field is `optional: true`".to_string(),
                    ));
                } else if problems.is_empty() {
                    let mut broken = Vec::new();
                    check_rules(&rules, &d.to_json(), &mut broken);
                    problems.extend(broken.into_iter().map(|m| (d.span, m)));
                }
                for (span, p) in &problems {
                    self.err(Diagnostic::new(*span, format!("default of {what}: {p}")));
                }
                if problems.is_empty() {
                    Some(d.to_json())
                } else {
                    None
                }
            }
        };
        let permissions = get("permissions")
            .map(|p| self.field_permissions(p, &what))
            .unwrap_or_default();
        let backfill = match get("backfill") {
            None => None,
            Some(b) => {
                let mut problems = Vec::new();
                check_value(&ty, b, &mut problems);
                if matches!(b.scalar(), Some(Scalar::Null)) {
                    problems.push((
                        b.span,
                        "a backfill of null is what an optional field reads anyway; give a value"
                            .to_string(),
                    ));
                } else if problems.is_empty() {
                    let mut broken = Vec::new();
                    check_rules(&rules, &b.to_json(), &mut broken);
                    problems.extend(broken.into_iter().map(|m| (b.span, m)));
                }
                if unique && problems.is_empty() {
                    problems.push((
                        b.span,
                        "every record stored before would read the same value, but the field is unique"
                            .to_string(),
                    ));
                }
                for (span, p) in &problems {
                    self.err(Diagnostic::new(*span, format!("backfill of {what}: {p}")));
                }
                problems.is_empty().then(|| b.to_json())
            }
        };
        let renamed_from = get("renamed_from").and_then(|r| {
            let old = self.string(r, &format!("renamed_from of {what}"))?;
            if !names::is_snake(&old) {
                self.err(Diagnostic::new(
                    r.span,
                    format!("renamed_from of {what} must be the field's former snake_case name, found \"{old}\""),
                ));
                return None;
            }
            if old == name {
                self.err(
                    Diagnostic::new(r.span, format!("{what} is renamed from its own name"))
                        .with_help("remove `renamed_from`, or write the name the field had before"),
                );
                return None;
            }
            Some(old)
        });
        Some(Field {
            name: name.to_string(),
            ty,
            optional,
            default,
            unique,
            indexed,
            immutable,
            rules,
            description,
            permissions,
            renamed_from,
            backfill,
        })
    }

    /// `permissions:` of a field.
    fn field_permissions(&mut self, node: &Node, what: &str) -> FieldPermissions {
        let Some(e) = self.mapping(
            node,
            &format!("the permissions of {what}"),
            keys::FIELD_PERMISSIONS,
            &[],
        ) else {
            return FieldPermissions::default();
        };
        let list = |this: &mut Self, key: &str| {
            e.get(key).map(|v| {
                this.role_list(v, &format!("permission \"{key}\" of {what}"), false)
                    .into_iter()
                    .map(|(r, _)| r)
                    .collect()
            })
        };
        FieldPermissions {
            read: list(self, "read"),
            write: list(self, "write"),
        }
    }

    fn field_type(
        &mut self,
        text: &str,
        node: &Node,
        values: Option<&Node>,
        what: &str,
    ) -> Option<FieldType> {
        let text = text.trim();
        if let Some(inner) = text.strip_prefix("list<").and_then(|t| t.strip_suffix('>')) {
            if inner.trim().starts_with("list<") {
                self.err(
                    Diagnostic::new(
                        node.span,
                        format!("{what}: lists of lists are not supported"),
                    )
                    .with_help("use `json` for nested structures"),
                );
                return None;
            }
            let item = self.field_type(inner, node, values, what)?;
            return Some(FieldType::List {
                item: Box::new(item),
            });
        }
        if let Some(target) = text.strip_prefix("ref<").and_then(|t| t.strip_suffix('>')) {
            let target = target.trim();
            if !self.models.iter().any(|m| m == target) {
                self.err(
                    Diagnostic::new(
                        node.span,
                        format!("{what} refers to unknown model \"{target}\""),
                    )
                    .with_suggestion(target, self.models.iter().map(String::as_str))
                    .with_help_if_none(format!("declared models: {}", self.models.join(", "))),
                );
                return None;
            }
            return Some(FieldType::Ref {
                model: target.to_string(),
            });
        }
        Some(match text {
            "string" => FieldType::String,
            "text" => FieldType::Text,
            "bool" => FieldType::Bool,
            "int" => FieldType::Int,
            "float" => FieldType::Float,
            "uuid" => FieldType::Uuid,
            "date" => FieldType::Date,
            "datetime" => FieldType::Datetime,
            "json" => FieldType::Json,
            "enum" => FieldType::Enum {
                values: self.enum_values(values, node, what)?,
            },
            other => {
                let mut candidates: Vec<String> =
                    SCALAR_TYPES.iter().map(|s| s.to_string()).collect();
                candidates.extend(["list<string>".to_string()]);
                candidates.extend(self.models.iter().map(|m| format!("ref<{m}>")));
                let candidates_ref: Vec<&str> = candidates.iter().map(String::as_str).collect();
                self.err(
                    Diagnostic::new(node.span, format!("unknown type \"{other}\" for {what}"))
                        .with_suggestion(other, candidates_ref)
                        .with_help_if_none("types are: string, text, bool, int, float, uuid, date, datetime, json, enum, list<T>, ref<Model>"),
                );
                return None;
            }
        })
    }

    fn enum_values(
        &mut self,
        values: Option<&Node>,
        type_node: &Node,
        what: &str,
    ) -> Option<Vec<String>> {
        let Some(values) = values else {
            self.err(
                Diagnostic::new(
                    type_node.span,
                    format!("{what} is an enum but has no \"values\""),
                )
                .with_help("add `values: [draft, published]`"),
            );
            return None;
        };
        let list = self.string_list(values, &format!("the values of {what}"));
        if list.is_empty() {
            self.err(Diagnostic::new(
                values.span,
                format!("{what} needs at least one enum value"),
            ));
            return None;
        }
        let mut out: Vec<String> = Vec::new();
        let mut variants: Vec<String> = Vec::new();
        let mut ok = true;
        for (v, span) in list {
            let valid = !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            let variant = names::variant(&v);
            if !valid {
                self.err(Diagnostic::new(
                    span,
                    format!("enum value \"{v}\" may only use letters, digits, `_` and `-`"),
                ));
                ok = false;
            } else if out.contains(&v) {
                self.err(Diagnostic::new(
                    span,
                    format!("enum value \"{v}\" is listed twice"),
                ));
                ok = false;
            } else if variants.contains(&variant) {
                self.err(Diagnostic::new(span, format!("enum value \"{v}\" is too close to another value (both become the Rust variant `{variant}`)")));
                ok = false;
            }
            out.push(v);
            variants.push(variant);
        }
        ok.then_some(out)
    }

    fn rules(&mut self, node: &Node, ty: &FieldType, what: &str) -> Rules {
        let Some(e) = self.mapping(
            node,
            &format!("the validate rules of {what}"),
            keys::VALIDATE,
            &[],
        ) else {
            return Rules::default();
        };
        let mut r = Rules::default();
        let lengthy = ty.is_stringy() || matches!(ty, FieldType::List { .. });
        for (key, (k, v)) in &e.map {
            let applies = match *key {
                "min" | "max" => ty.is_numeric(),
                "min_length" | "max_length" => lengthy,
                _ => ty.is_stringy(),
            };
            if !applies {
                let to = match *key {
                    "min" | "max" => "int and float fields",
                    "min_length" | "max_length" => "string, text and list fields",
                    _ => "string and text fields",
                };
                self.err(
                    Diagnostic::new(
                        k.span,
                        format!(
                            "\"{key}\" does not apply to {what} of type {}",
                            ty.spelling()
                        ),
                    )
                    .with_help(format!("\"{key}\" applies to {to}")),
                );
                continue;
            }
            match *key {
                "min" => r.min = self.number(v, "min"),
                "max" => r.max = self.number(v, "max"),
                "min_length" => r.min_length = self.count(v, "min_length", 0),
                "max_length" => r.max_length = self.count(v, "max_length", 0),
                _ => {
                    if let Some(p) = self.string(v, "pattern") {
                        match regex::Regex::new(&p) {
                            Ok(_) => r.pattern = Some(p),
                            Err(err) => {
                                let detail = err.to_string();
                                let last = detail.lines().last().unwrap_or("").trim();
                                let last = last.strip_prefix("error: ").unwrap_or(last).to_string();
                                self.err(Diagnostic::new(
                                    v.span,
                                    format!(
                                        "invalid regular expression in pattern of {what}: {last}"
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
        }
        if let (Some(min), Some(max)) = (r.min, r.max) {
            if min > max {
                let at = e.map.get("min").map(|(k, _)| k.span).unwrap_or(e.at);
                self.err(
                    Diagnostic::new(
                        at,
                        format!("min ({min}) is greater than max ({max}) for {what}"),
                    )
                    .with_help("no value could pass; swap them or fix one"),
                );
            }
        }
        if let (Some(min), Some(max)) = (r.min_length, r.max_length) {
            if min > max {
                let at = e.map.get("min_length").map(|(k, _)| k.span).unwrap_or(e.at);
                self.err(
                    Diagnostic::new(
                        at,
                        format!("min_length ({min}) is greater than max_length ({max}) for {what}"),
                    )
                    .with_help("no value could pass; swap them or fix one"),
                );
            }
        }
        r
    }

    /// The fields of an action's `input` (or `output`, `is_output`): the syntax of a
    /// model's fields, under the name of the struct they become; the keys that only mean
    /// something for stored records are refused.
    fn io_fields(
        &mut self,
        node: &Node,
        typed: &str,
        what: &str,
        is_output: bool,
    ) -> Option<Vec<Field>> {
        if !matches!(node.kind, NodeKind::Map(_)) {
            self.err(
                Diagnostic::new(
                    node.span,
                    format!(
                        "the {} of {what} must be a mapping of fields{}, found {}",
                        if is_output { "output" } else { "input" },
                        if is_output { " or a model's name" } else { "" },
                        node.describe()
                    ),
                )
                .with_help("e.g. `{ quantity: { type: int, validate: { min: 1 } } }`"),
            );
            return None;
        }
        let fields = self.fields(node, typed)?;
        let NodeKind::Map(entries) = &node.kind else {
            return Some(fields);
        };
        let mut ok = true;
        for f in &fields {
            let stored_only = [
                ("unique", f.unique),
                ("indexed", f.indexed),
                ("immutable", f.immutable),
                ("permissions", !f.permissions.is_open()),
                ("renamed_from", f.renamed_from.is_some()),
                ("backfill", f.backfill.is_some()),
                ("default", is_output && f.default.is_some()),
            ];
            for (key, set) in stored_only {
                if !set {
                    continue;
                }
                let at = entries
                    .iter()
                    .find(|(k, _)| k.as_str() == Some(f.name.as_str()))
                    .map_or(node.span, |(k, _)| k.span);
                self.err(
                    Diagnostic::new(
                        at,
                        format!(
                            "`{key}` does not apply to field \"{}\" of the {} of {what}",
                            f.name,
                            if is_output { "output" } else { "input" }
                        ),
                    )
                    .with_help(
                        "an action's body and answer are not stored records: remove the key",
                    ),
                );
                ok = false;
            }
        }
        ok.then_some(fields)
    }

    fn actions(&mut self, node: &Node, model: &str) -> Vec<Action> {
        let NodeKind::Map(entries) = &node.kind else {
            self.err(Diagnostic::new(
                node.span,
                format!(
                    "the actions of model \"{model}\" must be a mapping, found {}",
                    node.describe()
                ),
            ));
            return Vec::new();
        };
        let mut out: Vec<Action> = Vec::new();
        for (k, v) in entries {
            let Some(name) = self.string(k, "an action name") else {
                continue;
            };
            let what = format!("action \"{model}.{name}\"");
            if !names::is_snake(&name)
                || names::RAW_KEYWORDS.contains(&name.as_str())
                || names::FORBIDDEN_KEYWORDS.contains(&name.as_str())
            {
                self.err(Diagnostic::new(k.span, format!("action name \"{name}\" must be a snake_case name that is not a Rust keyword")).with_help(format!("e.g. \"{}\"", names::snake(&name))));
                continue;
            }
            if out.iter().any(|a| a.name == name) {
                self.err(Diagnostic::new(
                    k.span,
                    format!("action \"{name}\" is declared twice"),
                ));
                continue;
            }
            let Some(e) = self.mapping(v, &what, keys::ACTION, &[]) else {
                continue;
            };
            let method = match e.get("method") {
                None => {
                    self.missing(k.span, &what, "method", "add `method: POST`");
                    None
                }
                Some(m) => self
                    .string(m, &format!("the method of {what}"))
                    .and_then(|s| {
                        let up = s.to_ascii_uppercase();
                        if METHODS.contains(&up.as_str()) {
                            Some(up)
                        } else {
                            self.err(
                                Diagnostic::new(
                                    m.span,
                                    format!("unknown HTTP method \"{s}\" for {what}"),
                                )
                                .with_suggestion(&up, METHODS.iter().copied())
                                .with_help_if_none("use GET, POST, PUT, PATCH or DELETE"),
                            );
                            None
                        }
                    }),
            };
            let path = match e.get("path") {
                None => {
                    self.missing(k.span, &what, "path", "add e.g. `path: \"{id}/restock\"`");
                    None
                }
                Some(p) => self.string(p, &format!("the path of {what}")).and_then(|s| {
                    let mut segs = s.split('/');
                    let first = segs.next().unwrap_or("");
                    let seg_ok = |seg: &str| !seg.is_empty() && seg.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
                    let rest: Vec<&str> = segs.collect();
                    let ok = (first == "{id}" || seg_ok(first)) && rest.iter().all(|s| seg_ok(s)) && !(first == "{id}" && rest.is_empty());
                    if ok && s == "_events" {
                        self.err(Diagnostic::new(p.span, format!("path \"_events\" of {what} is the model's change feed"))
                            .with_help("`GET <model path>/_events` streams the model's changes; give the action another path"));
                        None
                    } else if ok {
                        Some(s)
                    } else {
                        self.err(Diagnostic::new(p.span, format!("path \"{s}\" of {what} is not valid")).with_help("write it relative to the model's path: `{id}/restock` for one record, `import` for the collection; lowercase segments"));
                        None
                    }
                }),
            };
            let permission = e
                .get("permission")
                .map(|p| {
                    self.role_list(p, &format!("the permission of {what}"), false)
                        .into_iter()
                        .map(|(r, _)| r)
                        .collect()
                })
                .unwrap_or_default();
            let description = e
                .get("description")
                .and_then(|d| self.string(d, &format!("the description of {what}")));
            let typed = format!("{model}{}", names::pascal(&name));
            let input = e
                .get("input")
                .and_then(|i| self.io_fields(i, &format!("{typed}Input"), &what, false));
            let output = e.get("output").and_then(|o| match o.scalar() {
                Some(Scalar::Str(target)) => {
                    if self.models.iter().any(|m| m == target) {
                        Some(ActionOutput::Model(target.to_string()))
                    } else {
                        self.err(
                            Diagnostic::new(o.span, format!("the output of {what} is \"{target}\", which is not a model"))
                                .with_suggestion(target, self.models.iter().map(String::as_str))
                                .with_help_if_none("write a model's name, or the fields of the answer like a model's `fields:`"),
                        );
                        None
                    }
                }
                _ => self
                    .io_fields(o, &format!("{typed}Output"), &what, true)
                    .map(ActionOutput::Fields),
            });
            if let (Some(method), Some(path)) = (method, path) {
                if let Some(other) = out.iter().find(|a| a.method == method && a.path == path) {
                    self.err(Diagnostic::new(
                        k.span,
                        format!(
                            "{what} has the same method and path as action \"{}\"",
                            other.name
                        ),
                    ));
                    continue;
                }
                out.push(Action {
                    name,
                    method,
                    path,
                    permission,
                    description,
                    input,
                    output,
                });
            }
        }
        out
    }
}

fn has_enum(t: &FieldType) -> bool {
    match t {
        FieldType::Enum { .. } => true,
        FieldType::List { item } => has_enum(item),
        _ => false,
    }
}

/// Field names that would clash with generated items.
const FORBIDDEN_NAME: &[&str] = &["Self"];

fn v_path_span(model_node: &Node) -> Option<Span> {
    if let NodeKind::Map(entries) = &model_node.kind {
        entries
            .iter()
            .find(|(k, _)| k.as_str() == Some("path"))
            .map(|(_, v)| v.span)
    } else {
        None
    }
}

/// Checks that a YAML value has the shape of `ty`; pushes a sentence per problem.
fn check_value(ty: &FieldType, node: &Node, problems: &mut Vec<(Span, String)>) {
    let s = node.scalar();
    let mut say = |m: String| problems.push((node.span, m));
    let ok = match ty {
        FieldType::Json => true,
        FieldType::String | FieldType::Text => matches!(s, Some(Scalar::Str(_))),
        FieldType::Bool => matches!(s, Some(Scalar::Bool(_))),
        FieldType::Int => matches!(s, Some(Scalar::Int(_))),
        FieldType::Float => matches!(s, Some(Scalar::Int(_) | Scalar::Float(_))),
        FieldType::Uuid | FieldType::Ref { .. } => matches!(s, Some(Scalar::Str(v)) if is_uuid(v)),
        FieldType::Date => matches!(s, Some(Scalar::Str(v)) if is_date(v)),
        FieldType::Datetime => matches!(s, Some(Scalar::Str(v)) if is_datetime(v)),
        FieldType::Enum { values } => match s {
            Some(Scalar::Str(v)) if values.iter().any(|x| x == v) => true,
            Some(Scalar::Str(v)) => {
                let hint = super::diagnostic::did_you_mean(v, values.iter().map(String::as_str))
                    .map(|n| format!(" (did you mean \"{n}\"?)"))
                    .unwrap_or_default();
                say(format!("\"{v}\" is not one of {}{hint}", values.join(", ")));
                return;
            }
            _ => false,
        },
        FieldType::List { item } => match &node.kind {
            NodeKind::Seq(items) => {
                for (n, i) in items.iter().enumerate() {
                    let mut inner = Vec::new();
                    check_value(item, i, &mut inner);
                    problems.extend(
                        inner
                            .into_iter()
                            .map(|(span, m)| (span, format!("item {}: {m}", n + 1))),
                    );
                }
                return;
            }
            _ => false,
        },
    };
    if ok || matches!(s, Some(Scalar::Null)) {
        return;
    }
    let found = match (ty, s) {
        (FieldType::Date | FieldType::Datetime, Some(Scalar::Str(v)))
            if v.len() >= 10 && v.as_bytes()[4] == b'-' =>
        {
            format!("\"{v}\", which is not a valid calendar date or time")
        }
        (FieldType::Int, Some(Scalar::Float(_)))
            if node.as_str().is_some_and(|t| {
                t.trim_start_matches('-')
                    .chars()
                    .all(|c| c.is_ascii_digit())
            }) =>
        {
            format!(
                "{}, which is out of range (integers are 64-bit)",
                node.as_str().unwrap_or_default()
            )
        }
        _ => node.describe().to_string(),
    };
    say(format!("expected {}, found {found}", expectation(ty)));
}

fn expectation(ty: &FieldType) -> String {
    match ty {
        FieldType::String | FieldType::Text => "a string".into(),
        FieldType::Bool => "true or false".into(),
        FieldType::Int => "an integer".into(),
        FieldType::Float => "a number".into(),
        FieldType::Uuid | FieldType::Ref { .. } => "a UUID string".into(),
        FieldType::Date => "a date like \"2024-09-13\"".into(),
        FieldType::Datetime => "an RFC 3339 timestamp like \"2024-09-13T10:30:00Z\"".into(),
        FieldType::Json => "any value".into(),
        FieldType::Enum { values } => format!("one of {}", values.join(", ")),
        FieldType::List { item } => format!("a list of {}", expectation(item)),
    }
}

/// Checks a JSON value against value rules (used for defaults).
fn check_rules(rules: &Rules, v: &Value, problems: &mut Vec<String>) {
    if let Some(n) = v.as_f64() {
        if let Some(min) = rules.min.filter(|m| n < *m) {
            problems.push(format!("{n} is below min ({min})"));
        }
        if let Some(max) = rules.max.filter(|m| n > *m) {
            problems.push(format!("{n} is above max ({max})"));
        }
    }
    let len = match v {
        Value::String(s) => Some(s.chars().count() as u64),
        Value::Array(a) => Some(a.len() as u64),
        _ => None,
    };
    if let Some(len) = len {
        if let Some(min) = rules.min_length.filter(|m| len < *m) {
            problems.push(format!("length {len} is below min_length ({min})"));
        }
        if let Some(max) = rules.max_length.filter(|m| len > *m) {
            problems.push(format!("length {len} is above max_length ({max})"));
        }
    }
    if let (Some(p), Value::String(s)) = (&rules.pattern, v) {
        if let Ok(re) = regex::Regex::new(&format!("^(?:{p})$")) {
            if !re.is_match(s) {
                problems.push(format!("\"{s}\" does not match pattern {p}"));
            }
        }
    }
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn is_date(s: &str) -> bool {
    let p: Vec<&str> = s.split('-').collect();
    if p.len() != 3 || p[0].len() != 4 || p[1].len() != 2 || p[2].len() != 2 {
        return false;
    }
    let (Ok(y), Ok(m), Ok(d)) = (
        p[0].parse::<u32>(),
        p[1].parse::<u32>(),
        p[2].parse::<u32>(),
    ) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

fn is_datetime(s: &str) -> bool {
    let re = regex::Regex::new(
        r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
    );
    match re.ok().and_then(|re| {
        re.captures(s).map(|c| {
            (
                c[1].to_string(),
                c[2].to_string(),
                c[3].to_string(),
                c[4].to_string(),
            )
        })
    }) {
        Some((date, h, m, sec)) => {
            is_date(&date)
                && h.parse::<u32>().is_ok_and(|h| h < 24)
                && m.parse::<u32>().is_ok_and(|m| m < 60)
                && sec.parse::<u32>().is_ok_and(|s| s < 61)
        }
        None => false,
    }
}

trait HelpIfNone {
    fn with_help_if_none(self, help: impl Into<String>) -> Self;
}

impl HelpIfNone for Diagnostic {
    fn with_help_if_none(self, help: impl Into<String>) -> Self {
        if self.help.is_some() {
            self
        } else {
            self.with_help(help)
        }
    }
}
