//! Fields: names, types, enum values, rules, defaults, backfills, renames and field
//! permissions; and the check of a YAML value against a field's type and rules.

use super::*;

impl Checker {
    pub(super) fn fields(&mut self, node: &Node, model: &str) -> Option<Vec<Field>> {
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
    pub(super) fn renames(&mut self, entries: &[(Node, Node)], fields: &[Field], model: &str) {
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
    pub(super) fn enum_name_clash(
        &mut self,
        model: &str,
        field: &str,
        key: &Node,
        seen: &mut Vec<String>,
    ) {
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

    pub(super) fn field(
        &mut self,
        model: &str,
        name: &str,
        key: &Node,
        node: &Node,
    ) -> Option<Field> {
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
                    check_rules(&ty, &rules, &d.to_json(), &mut broken);
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
                    check_rules(&ty, &rules, &b.to_json(), &mut broken);
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
    pub(super) fn field_permissions(&mut self, node: &Node, what: &str) -> FieldPermissions {
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

    pub(super) fn field_type(
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

    pub(super) fn enum_values(
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

    pub(super) fn rules(&mut self, node: &Node, ty: &FieldType, what: &str) -> Rules {
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
}

pub(super) fn has_enum(t: &FieldType) -> bool {
    match t {
        FieldType::Enum { .. } => true,
        FieldType::List { item } => has_enum(item),
        _ => false,
    }
}

/// Field names that would clash with generated items.
const FORBIDDEN_NAME: &[&str] = &["Self"];

/// Checks that a YAML value has the shape of `ty` (the shared check of
/// `lithair_spec::values`, on the value as JSON); pushes a sentence per problem, at the
/// node (or list item) it is about. Null passes: each caller says what null means.
pub(super) fn check_value(ty: &FieldType, node: &Node, problems: &mut Vec<(Span, String)>) {
    use lithair_spec::values::{self, Problem};
    if matches!(node.scalar(), Some(Scalar::Null)) {
        return;
    }
    for problem in values::check(ty, &Rules::default(), &node.to_json(), &|_| true) {
        let (path, sentence) = match problem {
            Problem::Type { path, expected } => {
                let at = item_node(node, &path);
                let sentence = format!(
                    "expected {}, found {}",
                    values::expected(&expected),
                    found(&expected, at)
                );
                (path, sentence)
            }
            Problem::NotInEnum {
                path,
                value,
                values,
            } => {
                let hint = crate::schema::diagnostic::did_you_mean(
                    &value,
                    values.iter().map(String::as_str),
                )
                .map(|n| format!(" (did you mean \"{n}\"?)"))
                .unwrap_or_default();
                (
                    path,
                    format!("\"{value}\" is not one of {}{hint}", values.join(", ")),
                )
            }
            // No rules were given.
            _ => continue,
        };
        let items: String = path.iter().map(|n| format!("item {}: ", n + 1)).collect();
        problems.push((item_node(node, &path).span, format!("{items}{sentence}")));
    }
}

/// The item at `path` of a list node (the node itself for an empty path).
fn item_node<'n>(node: &'n Node, path: &[usize]) -> &'n Node {
    let mut at = node;
    for n in path {
        match &at.kind {
            NodeKind::Seq(items) if *n < items.len() => at = &items[*n],
            _ => break,
        }
    }
    at
}

/// What a node that is not of type `ty` is, in words.
fn found(ty: &FieldType, node: &Node) -> String {
    let out_of_range = || {
        format!(
            "{}, which is out of range (an int holds up to 2^53, as JSON clients read numbers)",
            node.as_str().unwrap_or_default()
        )
    };
    match (ty, node.scalar()) {
        (FieldType::Date | FieldType::Datetime, Some(Scalar::Str(v)))
            if v.len() >= 10 && v.as_bytes()[4] == b'-' =>
        {
            format!("\"{v}\", which is not a valid calendar date or time")
        }
        (FieldType::Int, Some(Scalar::Int(_))) => out_of_range(),
        (FieldType::Int, Some(Scalar::Float(_)))
            if node.as_str().is_some_and(|t| {
                t.trim_start_matches('-')
                    .chars()
                    .all(|c| c.is_ascii_digit())
            }) =>
        {
            out_of_range()
        }
        (_, Some(Scalar::Float(f))) if !f.is_finite() => "a number that is not finite".into(),
        _ => node.describe().to_string(),
    }
}

/// Checks a JSON value of type `ty` against value rules (used for defaults and
/// backfills, once their type is right).
pub(super) fn check_rules(ty: &FieldType, rules: &Rules, v: &Value, problems: &mut Vec<String>) {
    use lithair_spec::values::{self, Problem};
    // A pattern that does not compile is reported where it is written.
    let pattern = rules
        .pattern
        .as_deref()
        .and_then(|p| regex::Regex::new(&values::anchored(p)).ok());
    let matches = |s: &str| pattern.as_ref().is_none_or(|re| re.is_match(s));
    let n = v.as_f64().unwrap_or_default();
    let len = match v {
        Value::String(s) => s.chars().count() as u64,
        Value::Array(a) => a.len() as u64,
        _ => 0,
    };
    for problem in values::check(ty, rules, v, &matches) {
        problems.push(match problem {
            Problem::Min(min) => format!("{n} is below min ({min})"),
            Problem::Max(max) => format!("{n} is above max ({max})"),
            Problem::MinLength(min) => format!("length {len} is below min_length ({min})"),
            Problem::MaxLength(max) => format!("length {len} is above max_length ({max})"),
            Problem::Pattern => format!(
                "{v} does not match pattern {}",
                rules.pattern.as_deref().unwrap_or("")
            ),
            // The type was checked before.
            Problem::Type { .. } | Problem::NotInEnum { .. } => continue,
        });
    }
}
