//! Models: their names and paths, operations, permissions, owner field, lifecycle,
//! cache and persistence.

use super::*;

impl Checker {
    pub(super) fn models_decl(&mut self, node: &Node) -> Option<Vec<Model>> {
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

    pub(super) fn model(&mut self, name: &str, key: &Node, node: &Node) -> Option<Model> {
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
        let tracing = e.get("tracing").and_then(|t| self.tracing(t, &what));
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
            tracing,
            fields,
            actions,
            renamed_from,
        })
    }

    /// `lifecycle:` of a model.
    pub(super) fn lifecycle(&mut self, node: &Node, what: &str) -> Lifecycle {
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
    pub(super) fn history_paths(&mut self, actions: &Node, model: &str) {
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
    pub(super) fn cache(&mut self, node: &Node, what: &str) -> Option<Cache> {
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

    /// `tracing:` of a model: `enabled` (default true), `sample_rate` (0 to 1),
    /// `include_body`.
    pub(super) fn tracing(&mut self, node: &Node, what: &str) -> Option<Tracing> {
        let what = format!("the tracing of {what}");
        let e = self.mapping(node, &what, keys::TRACING, &[])?;
        // Each key is checked, so that every error is reported at once.
        let enabled = e.get("enabled").map(|n| self.boolean(n, "tracing.enabled"));
        let sample_rate = e.get("sample_rate").map(|n| {
            let rate = self.number(n, "tracing.sample_rate")?;
            if !(0.0..=1.0).contains(&rate) {
                self.err(
                    Diagnostic::new(
                        n.span,
                        format!("tracing.sample_rate {rate} is not between 0 and 1"),
                    )
                    .with_help("the share of requests traced: 0.1 traces one in ten, 1 every one"),
                );
                return None;
            }
            Some(rate)
        });
        let include_body = e
            .get("include_body")
            .map(|n| self.boolean(n, "tracing.include_body"));
        let (Some(enabled), Some(sample_rate), Some(include_body)) = (
            enabled.unwrap_or(Some(true)),
            sample_rate.map_or(Some(None), |r| r.map(Some)),
            include_body.map_or(Some(None), |b| b.map(Some)),
        ) else {
            return None;
        };
        if !enabled && (sample_rate.is_some() || include_body.is_some()) {
            self.err(
                Diagnostic::new(
                    e.at,
                    format!("{what} is disabled but sets sample_rate or include_body"),
                )
                .with_help("remove `enabled: false`, or the settings it makes pointless"),
            );
            return None;
        }
        Some(Tracing {
            enabled,
            sample_rate,
            include_body,
        })
    }

    /// `owner_field:` of `model`: the name of one of its `string` fields, which is then
    /// kept indexed (an owner's list reads its index).
    pub(super) fn owner_field(
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

    pub(super) fn model_path(&mut self, node: &Node, model: &str) -> Option<String> {
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
    pub(super) fn permissions(
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
}

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
