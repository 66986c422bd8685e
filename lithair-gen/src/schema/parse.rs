//! Reads a schema's YAML tree into the checked [`Schema`], collecting every problem.
//!
//! The walk never stops at the first mistake: each check records a [`Diagnostic`] and
//! goes on, so a user fixes a whole file in one round. Names that other parts refer to
//! (models, roles) are collected first, so a `ref<…>` or a role can be checked where it
//! is written, with a "did you mean" drawn from what exists.
//!
//! This file holds the walk's entry, its shared checks (mappings, strings, role lists) and
//! the service and roles; the models (`parse/models.rs`), their fields and the check of a
//! value against a field's type and rules (`parse/fields.rs`), the actions
//! (`parse/actions.rs`) and the projections (`parse/projections.rs`) have files of their
//! own. What a value may be (reserved names, the largest int, dates, UUIDs, pattern
//! anchoring) is `lithair_spec::values`, which the runtime's checks share.

use std::collections::{BTreeMap, HashSet};

use lithair_spec::values::RESERVED_FIELDS;
use serde_json::Value;

use super::diagnostic::Diagnostic;
use super::keys;
use super::model::*;
use super::names;
use super::yaml::{self, Node, NodeKind, Pos, Scalar, Span};

mod actions;
mod fields;
mod models;
mod projections;

use fields::check_value;

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
