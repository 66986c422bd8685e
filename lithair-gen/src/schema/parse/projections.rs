//! `projections:`: read models that aggregate one model's records per group.
//!
//! Checked after the models, so a projection's source, its fields and their types are
//! known: an unknown source or field gets a "did you mean", a non-numeric field under
//! `sum`/`avg`/`min`/`max` or a granularity on a field that is not a date is refused
//! where it is written, and the projection's path (`/api/<snake_case plural>`) may not
//! take a model's or the runtime's.

use super::*;

/// Record metadata a projection may group by.
const GROUPABLE_METADATA: &[&str] = &["created_at", "updated_at"];

impl Checker {
    /// `projections:` at the top level, against the checked `models`.
    pub(super) fn projections_decl(&mut self, node: &Node, models: &[Model]) -> Vec<Projection> {
        let NodeKind::Map(entries) = &node.kind else {
            self.err(Diagnostic::new(
                node.span,
                format!(
                    "projections must be a mapping of projection names, found {}",
                    node.describe()
                ),
            ));
            return Vec::new();
        };
        let mut out: Vec<Projection> = Vec::new();
        for (k, v) in entries {
            let Some(name) = self.string(k, "a projection name") else {
                continue;
            };
            if !names::is_pascal(&name) {
                self.err(
                    Diagnostic::new(
                        k.span,
                        format!("projection name \"{name}\" must be PascalCase"),
                    )
                    .with_help(format!("rename it \"{}\"", names::pascal(&name))),
                );
                continue;
            }
            if out.iter().any(|p| p.name == name) {
                self.err(Diagnostic::new(
                    k.span,
                    format!("projection \"{name}\" is declared twice"),
                ));
                continue;
            }
            if models.iter().any(|m| m.name == name) {
                self.err(
                    Diagnostic::new(
                        k.span,
                        format!("projection \"{name}\" has the name of a model"),
                    )
                    .with_help(format!(
                        "give the projection a name of its own, e.g. \"{name}Metrics\""
                    )),
                );
                continue;
            }
            let path = projection_path(&name);
            let clash = models.iter().find(|m| {
                m.path == path
                    || m.path.starts_with(&format!("{path}/"))
                    || path.starts_with(&format!("{}/", m.path))
            });
            if let Some(m) = clash {
                self.err(
                    Diagnostic::new(k.span, format!("projection \"{name}\" would be served at \"{path}\", which overlaps the path \"{}\" of model \"{}\"", m.path, m.name))
                        .with_help("rename the projection, or give the model another `path`"),
                );
                continue;
            }
            if let Some(r) = super::RESERVED_PATHS.iter().find(|r| path == **r) {
                self.err(Diagnostic::new(
                    k.span,
                    format!("projection \"{name}\" would be served at \"{r}\", which the runtime serves itself"),
                ).with_help("rename the projection"));
                continue;
            }
            if let Some(p) = self.projection(&name, path, k, v, models) {
                out.push(p);
            }
        }
        out
    }

    fn projection(
        &mut self,
        name: &str,
        path: String,
        key: &Node,
        node: &Node,
        models: &[Model],
    ) -> Option<Projection> {
        let what = format!("projection \"{name}\"");
        let e = self.mapping(node, &what, keys::PROJECTION, &[])?;
        let description = e
            .get("description")
            .and_then(|d| self.string(d, &format!("{what}.description")));
        let Some(source_node) = e.get("source") else {
            self.missing(
                key.span,
                &what,
                "source",
                "add `source: <model>`: the model whose records it aggregates",
            );
            return None;
        };
        let source_name = self.string(source_node, &format!("the source of {what}"))?;
        let Some(source) = models.iter().find(|m| m.name == source_name) else {
            self.err(
                Diagnostic::new(
                    source_node.span,
                    format!("the source of {what} is \"{source_name}\", which is not a model"),
                )
                .with_suggestion(&source_name, models.iter().map(|m| m.name.as_str()))
                .with_help_if_none(format!(
                    "models are: {}",
                    models
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            );
            return None;
        };
        let filter = e
            .get("where")
            .map(|w| self.conditions(w, source, &what))
            .unwrap_or_default();
        let group_by = match e.get("group_by") {
            Some(g) => self.group_by(g, source, &what),
            None => {
                self.missing(
                    key.span,
                    &what,
                    "group_by",
                    "add e.g. `group_by: { field: placed_at, granularity: day }` or `group_by: { field: status }`",
                );
                None
            }
        };
        let read = match e.get("permissions") {
            Some(p) => self.projection_read(p, &what),
            None => {
                let read: Vec<String> = source
                    .permissions
                    .read
                    .iter()
                    .filter(|r| *r != OWNER)
                    .cloned()
                    .collect();
                if read.is_empty() && source.permissions.read.iter().any(|r| r == OWNER) {
                    self.err(
                        Diagnostic::new(key.span, format!("{what} has no `permissions`, and its source \"{}\" is read by the pseudo-role \"owner\" only", source.name))
                            .with_help("a projection sums up everyone's records: give it its own `permissions: { read: [...] }`"),
                    );
                }
                read
            }
        };
        let aggregates = match e.get("aggregates") {
            Some(a) => self.aggregates(a, source, &what, group_by.as_ref()),
            None => {
                self.missing(
                    key.span,
                    &what,
                    "aggregates",
                    "add e.g. `aggregates: { orders_count: { count: true }, revenue: { sum: total } }`",
                );
                None
            }
        };
        Some(Projection {
            name: name.to_string(),
            path,
            description,
            source: source.name.clone(),
            filter,
            group_by: group_by?,
            read,
            aggregates: aggregates?,
        })
    }

    /// `where:`: `field: value` pairs, each value of the field's type.
    fn conditions(&mut self, node: &Node, source: &Model, what: &str) -> Vec<Condition> {
        let NodeKind::Map(entries) = &node.kind else {
            self.err(
                Diagnostic::new(
                    node.span,
                    format!(
                        "the `where` of {what} must be a mapping of fields to values, found {}",
                        node.describe()
                    ),
                )
                .with_help("e.g. `where: { status: paid }`"),
            );
            return Vec::new();
        };
        let mut out: Vec<Condition> = Vec::new();
        for (k, v) in entries {
            let Some(field) = self.string(k, &format!("a field in the `where` of {what}")) else {
                continue;
            };
            let Some(f) = self.source_field(
                &field,
                k.span,
                source,
                &format!("the `where` of {what}"),
                false,
            ) else {
                continue;
            };
            if matches!(f.ty, FieldType::List { .. } | FieldType::Json) {
                self.err(Diagnostic::new(
                    k.span,
                    format!("the `where` of {what} compares `{field}`, a {} field: only single values compare", f.ty.spelling()),
                ).with_help("filter on a string, number, bool, enum, date, datetime, uuid or ref field"));
                continue;
            }
            let mut problems = Vec::new();
            check_value(&f.ty, v, &mut problems);
            if matches!(v.scalar(), Some(Scalar::Null)) {
                problems.push((v.span, "a `where` value cannot be null".to_string()));
            }
            if !problems.is_empty() {
                for (span, p) in problems {
                    self.err(Diagnostic::new(
                        span,
                        format!("`{field}` in the `where` of {what}: {p}"),
                    ));
                }
                continue;
            }
            if out.iter().any(|c| c.field == field) {
                self.err(Diagnostic::new(
                    k.span,
                    format!("`{field}` is given twice in the `where` of {what}"),
                ));
                continue;
            }
            out.push(Condition {
                field,
                value: v.to_json(),
            });
        }
        out
    }

    /// A field of the source (or, where `metadata`, `created_at` and `updated_at`,
    /// which are returned as a datetime field).
    fn source_field(
        &mut self,
        name: &str,
        at: Span,
        source: &Model,
        what: &str,
        metadata: bool,
    ) -> Option<Field> {
        if metadata && GROUPABLE_METADATA.contains(&name) {
            return Some(Field {
                name: name.to_string(),
                ty: FieldType::Datetime,
                optional: false,
                default: None,
                unique: false,
                indexed: false,
                immutable: false,
                rules: Rules::default(),
                description: None,
                permissions: FieldPermissions::default(),
                renamed_from: None,
                backfill: None,
            });
        }
        if let Some(f) = source.field(name) {
            return Some(f.clone());
        }
        let extra: &[&str] = if metadata { GROUPABLE_METADATA } else { &[] };
        let candidates: Vec<&str> = source
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .chain(extra.iter().copied())
            .collect();
        self.err(
            Diagnostic::new(
                at,
                format!(
                    "{what} names `{name}`, which model \"{}\" has no field of",
                    source.name
                ),
            )
            .with_suggestion(name, candidates.iter().copied())
            .with_help_if_none(format!(
                "fields of \"{}\": {}",
                source.name,
                candidates.join(", ")
            )),
        );
        None
    }

    /// `group_by: { field, granularity }`.
    fn group_by(&mut self, node: &Node, source: &Model, what: &str) -> Option<GroupBy> {
        let gwhat = format!("the `group_by` of {what}");
        let e = self.mapping(node, &gwhat, keys::GROUP_BY, &[])?;
        let Some(field_node) = e.get("field") else {
            self.missing(
                e.at,
                &gwhat,
                "field",
                "add `field: <a field of the source>`",
            );
            return None;
        };
        let field = self.string(field_node, &format!("the field of {gwhat}"))?;
        let f = self.source_field(&field, field_node.span, source, &gwhat, true)?;
        if matches!(f.ty, FieldType::List { .. } | FieldType::Json) {
            self.err(
                Diagnostic::new(
                    field_node.span,
                    format!(
                        "{gwhat} is `{field}`, a {} field: records group by a single value",
                        f.ty.spelling()
                    ),
                )
                .with_help(
                    "group by a string, number, bool, enum, date, datetime, uuid or ref field",
                ),
            );
            return None;
        }
        let granularity = match e.get("granularity") {
            None => None,
            Some(g) => {
                let text = self.string(g, &format!("the granularity of {gwhat}"))?;
                let Some(gran) = Granularity::ALL.iter().find(|x| x.as_str() == text) else {
                    self.err(
                        Diagnostic::new(g.span, format!("unknown granularity \"{text}\""))
                            .with_suggestion(&text, Granularity::ALL.iter().map(|x| x.as_str()))
                            .with_help_if_none("granularities are: hour, day, week, month"),
                    );
                    return None;
                };
                match (&f.ty, gran) {
                    (FieldType::Datetime, _) => {}
                    (FieldType::Date, Granularity::Hour) => {
                        self.err(
                            Diagnostic::new(
                                g.span,
                                format!("`{field}` is a date: it has no hours"),
                            )
                            .with_help("use day, week or month"),
                        );
                        return None;
                    }
                    (FieldType::Date, _) => {}
                    (other, _) => {
                        self.err(
                            Diagnostic::new(g.span, format!("a granularity groups dates and datetimes, but `{field}` is a {} field", other.spelling()))
                                .with_help("remove `granularity` to group by the field's values"),
                        );
                        return None;
                    }
                }
                Some(*gran)
            }
        };
        Some(GroupBy { field, granularity })
    }

    /// `permissions: { read: [...] }` of a projection.
    fn projection_read(&mut self, node: &Node, what: &str) -> Vec<String> {
        let pwhat = format!("the permissions of {what}");
        let Some(e) = self.mapping(node, &pwhat, keys::PROJECTION_PERMISSIONS, &[]) else {
            return Vec::new();
        };
        let Some(read) = e.get("read") else {
            self.missing(e.at, &pwhat, "read", "add `read: [<roles>]`");
            return Vec::new();
        };
        self.role_list(read, &format!("the read permission of {what}"), false)
            .into_iter()
            .map(|(r, _)| r)
            .collect()
    }

    /// `aggregates:`: `name: { sum | avg | min | max: field }` or `name: { count: true }`.
    fn aggregates(
        &mut self,
        node: &Node,
        source: &Model,
        what: &str,
        group_by: Option<&GroupBy>,
    ) -> Option<Vec<Aggregate>> {
        let NodeKind::Map(entries) = &node.kind else {
            self.err(
                Diagnostic::new(
                    node.span,
                    format!(
                        "the aggregates of {what} must be a mapping, found {}",
                        node.describe()
                    ),
                )
                .with_help("e.g. `aggregates: { orders_count: { count: true } }`"),
            );
            return None;
        };
        if entries.is_empty() {
            self.err(
                Diagnostic::new(node.span, format!("{what} has no aggregates"))
                    .with_help("add e.g. `orders_count: { count: true }`"),
            );
            return None;
        }
        let ops: Vec<&str> = AggregateOp::ALL.iter().map(|o| o.as_str()).collect();
        let mut out: Vec<Aggregate> = Vec::new();
        for (k, v) in entries {
            let Some(name) = self.string(k, &format!("an aggregate name of {what}")) else {
                continue;
            };
            if !names::is_snake(&name) {
                self.err(
                    Diagnostic::new(
                        k.span,
                        format!("aggregate name \"{name}\" must be snake_case"),
                    )
                    .with_help(format!("rename it \"{}\"", names::snake(&name))),
                );
                continue;
            }
            if group_by.is_some_and(|g| g.field == name) {
                self.err(
                    Diagnostic::new(
                        k.span,
                        format!("aggregate \"{name}\" has the name of the field {what} groups by"),
                    )
                    .with_help(
                        "each group holds its key under that name; give the aggregate another",
                    ),
                );
                continue;
            }
            if out.iter().any(|a| a.name == name) {
                self.err(Diagnostic::new(
                    k.span,
                    format!("aggregate \"{name}\" is declared twice in {what}"),
                ));
                continue;
            }
            let awhat = format!("aggregate \"{name}\" of {what}");
            let Some(e) = self.mapping(v, &awhat, &ops, &[]) else {
                continue;
            };
            let mut given = e.map.iter();
            let Some((op_name, (op_key, arg))) = given.next() else {
                self.err(
                    Diagnostic::new(v.span, format!("{awhat} computes nothing"))
                        .with_help("write one of `count: true`, `sum: <field>`, `avg: <field>`, `min: <field>`, `max: <field>`"),
                );
                continue;
            };
            if let Some((_, (second, _))) = given.next() {
                self.err(
                    Diagnostic::new(second.span, format!("{awhat} computes more than one thing"))
                        .with_help("give each computation an aggregate of its own"),
                );
                continue;
            }
            let Some(op) = AggregateOp::ALL
                .iter()
                .copied()
                .find(|o| o.as_str() == *op_name)
            else {
                continue;
            };
            if op == AggregateOp::Count {
                if !matches!(arg.scalar(), Some(Scalar::Bool(true))) {
                    self.err(
                        Diagnostic::new(
                            arg.span,
                            format!("`count` of {awhat} takes `true`, found {}", arg.describe()),
                        )
                        .with_help("write `count: true`: it counts the group's records"),
                    );
                    continue;
                }
                out.push(Aggregate {
                    name,
                    op,
                    field: None,
                });
                continue;
            }
            let Some(field) = self.string(arg, &format!("the field of {awhat}")) else {
                continue;
            };
            let Some(f) = self.source_field(&field, arg.span, source, &awhat, false) else {
                continue;
            };
            if !f.ty.is_numeric() {
                let numeric: Vec<&str> = source
                    .fields
                    .iter()
                    .filter(|f| f.ty.is_numeric())
                    .map(|f| f.name.as_str())
                    .collect();
                self.err(
                    Diagnostic::new(
                        arg.span,
                        format!(
                            "`{}` of {awhat} needs a number, but `{field}` is a {} field",
                            op_key.as_str().unwrap_or_default(),
                            f.ty.spelling()
                        ),
                    )
                    .with_help(if numeric.is_empty() {
                        format!(
                            "model \"{}\" has no int or float field; `count: true` counts records",
                            source.name
                        )
                    } else {
                        format!(
                            "numeric fields of \"{}\": {}",
                            source.name,
                            numeric.join(", ")
                        )
                    }),
                );
                continue;
            }
            out.push(Aggregate {
                name,
                op,
                field: Some(field),
            });
        }
        Some(out)
    }
}

/// `/api/` and the snake_case name, made plural unless it already is
/// (`SalesMetrics` -> `/api/sales_metrics`, `DailyTotal` -> `/api/daily_totals`).
fn projection_path(name: &str) -> String {
    let snake = names::snake(name);
    if snake.ends_with('s') && !snake.ends_with("ss") {
        format!("/api/{snake}")
    } else {
        format!("/api/{}", names::plural(&snake))
    }
}
