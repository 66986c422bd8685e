//! Actions: names, methods, paths, permissions, and their typed input and output.

use super::*;

impl Checker {
    /// The fields of an action's `input` (or `output`, `is_output`): the syntax of a
    /// model's fields, under the name of the struct they become; the keys that only mean
    /// something for stored records are refused.
    pub(super) fn io_fields(
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

    pub(super) fn actions(&mut self, node: &Node, model: &str) -> Vec<Action> {
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
