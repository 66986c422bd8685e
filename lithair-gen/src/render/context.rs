//! The view model handed to templates: the checked schema plus every name, type and
//! attribute already worked out, so templates stay free of logic.

use serde::Serialize;

use crate::schema::model::{Action, ActionOutput, Field, FieldType, Model, Schema};
use crate::schema::names;

/// The whole-service context (`Cargo.toml`, `main.rs`, `lithair.toml`, `mod.rs`).
#[derive(Serialize)]
pub struct ServiceView<'a> {
    pub service: &'a crate::schema::model::Service,
    pub models: Vec<ModelView<'a>>,
    pub runtime_dependency: String,
    /// The service builder's type parameters, one per model (`CategoryH, ProductH`).
    pub params: String,
    /// Each model's builder with that model's handlers given.
    pub builders: Vec<BuilderView>,
}

/// The `with_<model>` method of the service builder.
#[derive(Serialize)]
pub struct BuilderView {
    pub name: String,
    pub snake: String,
    /// The builder it answers: its parameters, that model's being `Given<H>`.
    pub params: String,
    /// Its fields' values: that model's `Given(handlers)`, the others moved over.
    pub fields: String,
}

/// One model (`model.rs`, `handler.rs`).
#[derive(Serialize)]
pub struct ModelView<'a> {
    pub name: &'a str,
    /// Its type parameter in the service builder (`ProductH`).
    pub param: String,
    pub snake: &'a str,
    pub path: &'a str,
    pub doc: String,
    pub fields: Vec<FieldView>,
    pub enums: Vec<EnumView>,
    pub actions: Vec<ActionView<'a>>,
    /// The structs of its actions' inputs and outputs.
    pub io_structs: Vec<StructView>,
}

/// One field of the record struct.
#[derive(Serialize)]
pub struct FieldView {
    pub ident: String,
    pub rust_type: String,
    pub doc: String,
    pub serde_attr: String,
}

/// An enum generated for an enum field.
#[derive(Serialize)]
pub struct EnumView {
    pub field: String,
    pub type_name: String,
    pub variants: Vec<VariantView>,
}

/// One enum value.
#[derive(Serialize)]
pub struct VariantView {
    pub value: String,
    pub variant: String,
}

/// One action.
#[derive(Serialize)]
pub struct ActionView<'a> {
    pub name: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub on_record: bool,
    pub description: Option<&'a str>,
    /// The struct of its `input`, if it has one.
    pub input: Option<String>,
    /// The Rust type it answers, in the model file (`Product`, `super::order::Order`,
    /// `ProductRestockOutput`), if it is typed.
    pub output: Option<String>,
    /// The same type, as the handler file names it.
    pub handler_output: Option<String>,
    /// Whether the router converts its input or output.
    pub typed: bool,
}

/// A struct of an action's input or output.
#[derive(Serialize)]
pub struct StructView {
    pub name: String,
    pub doc: String,
    pub fields: Vec<FieldView>,
}

/// `/// ` lines for a doc comment (one line when there is no text).
pub fn doc_lines(text: Option<&str>, fallback: &str) -> String {
    let text = text
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or(fallback);
    text.lines()
        .map(|l| {
            let l = l.trim_end();
            if l.is_empty() {
                "///".to_string()
            } else {
                format!("/// {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The Rust name of the enum generated for `model.field`.
pub fn enum_type_name(model: &str, field: &str) -> String {
    format!("{model}{}", names::pascal(field))
}

fn rust_type(model: &str, field: &str, ty: &FieldType) -> String {
    match ty {
        FieldType::String | FieldType::Text => "String".into(),
        FieldType::Bool => "bool".into(),
        FieldType::Int => "i64".into(),
        FieldType::Float => "f64".into(),
        FieldType::Uuid | FieldType::Ref { .. } => "Uuid".into(),
        FieldType::Date => "NaiveDate".into(),
        FieldType::Datetime => "DateTime<Utc>".into(),
        FieldType::Json => "Value".into(),
        FieldType::Enum { .. } => enum_type_name(model, field),
        FieldType::List { item } => format!("Vec<{}>", rust_type(model, field, item)),
    }
}

fn enum_values(ty: &FieldType) -> Option<&Vec<String>> {
    match ty {
        FieldType::Enum { values } => Some(values),
        FieldType::List { item } => enum_values(item),
        _ => None,
    }
}

fn field_view(owner: &str, f: &Field) -> FieldView {
    let base = rust_type(owner, &f.name, &f.ty);
    let mut what = f
        .description
        .clone()
        .unwrap_or_else(|| format!("`{}` ({}).", f.name, f.ty.spelling()));
    let mut notes = Vec::new();
    if f.unique {
        notes.push("unique".to_string());
    }
    if f.immutable {
        notes.push("immutable".to_string());
    }
    if let Some(d) = &f.default {
        notes.push(format!("default `{d}`"));
    }
    if !notes.is_empty() {
        what.push_str(&format!("\n\n{}.", capitalize(&notes.join(", "))));
    }
    FieldView {
        ident: names::rust_ident(&f.name),
        rust_type: if f.optional {
            format!("Option<{base}>")
        } else {
            base
        },
        doc: doc_lines(Some(&what), ""),
        serde_attr: if f.optional {
            "#[serde(default, skip_serializing_if = \"Option::is_none\")]".into()
        } else {
            String::new()
        },
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// The name of the struct of action `a`'s input (`Input`) or output (`Output`).
fn io_name(m: &Model, a: &Action, which: &str) -> String {
    format!("{}{}{which}", m.name, names::pascal(&a.name))
}

fn action_view<'a>(m: &Model, a: &'a Action, models: &[Model]) -> ActionView<'a> {
    let (output, handler_output) = match &a.output {
        None => (None, None),
        Some(ActionOutput::Model(name)) if *name == m.name => {
            (Some(name.clone()), Some(name.clone()))
        }
        Some(ActionOutput::Model(name)) => {
            let snake = models
                .iter()
                .find(|o| o.name == *name)
                .map_or_else(|| names::snake(name), |o| o.snake.clone());
            (
                Some(format!("super::{snake}::{name}")),
                Some(format!("crate::generated::{snake}::{name}")),
            )
        }
        Some(ActionOutput::Fields(_)) => {
            let n = io_name(m, a, "Output");
            (Some(n.clone()), Some(n))
        }
    };
    let input = a.input.as_ref().map(|_| io_name(m, a, "Input"));
    ActionView {
        name: &a.name,
        method: &a.method,
        path: &a.path,
        on_record: a.on_record(),
        description: a.description.as_deref(),
        typed: input.is_some() || output.is_some(),
        input,
        output,
        handler_output,
    }
}

/// The enums of `fields`, owned by `owner` (a model, or an action's input or output).
fn enums_of(owner: &str, fields: &[Field]) -> Vec<EnumView> {
    fields
        .iter()
        .filter_map(|f| {
            enum_values(&f.ty).map(|values| EnumView {
                field: f.name.clone(),
                type_name: enum_type_name(owner, &f.name),
                variants: values
                    .iter()
                    .map(|v| VariantView {
                        value: v.clone(),
                        variant: names::variant(v),
                    })
                    .collect(),
            })
        })
        .collect()
}

/// The structs of `m`'s actions' inputs and outputs, and their enums.
fn io_structs(m: &Model) -> (Vec<StructView>, Vec<EnumView>) {
    let mut structs = Vec::new();
    let mut enums = Vec::new();
    for a in &m.actions {
        let output = match &a.output {
            Some(ActionOutput::Fields(f)) => Some(f),
            _ => None,
        };
        for (which, fields) in [("Input", a.input.as_ref()), ("Output", output)] {
            let Some(fields) = fields else { continue };
            let name = io_name(m, a, which);
            let what = if which == "Input" {
                "The body"
            } else {
                "The answer"
            };
            enums.extend(enums_of(&name, fields));
            structs.push(StructView {
                doc: doc_lines(
                    Some(&format!("{what} of action `{}` of `{}`.", a.name, m.name)),
                    "",
                ),
                fields: fields.iter().map(|f| field_view(&name, f)).collect(),
                name,
            });
        }
    }
    (structs, enums)
}

/// The view of one model (`models`: every model of the schema, for the actions that
/// answer a record of another).
pub fn model_view<'a>(m: &'a Model, models: &[Model]) -> ModelView<'a> {
    let (io, io_enums) = io_structs(m);
    let mut enums = enums_of(&m.name, &m.fields);
    enums.extend(io_enums);
    ModelView {
        name: &m.name,
        snake: &m.snake,
        path: &m.path,
        doc: doc_lines(
            m.description.as_deref(),
            &format!("A `{}` record, served at `{}`.", m.name, m.path),
        ),
        fields: m.fields.iter().map(|f| field_view(&m.name, f)).collect(),
        enums,
        actions: m
            .actions
            .iter()
            .map(|a| action_view(m, a, models))
            .collect(),
        io_structs: io,
        param: format!("{}H", m.name),
    }
}

/// The view of the whole service.
pub fn service_view<'a>(schema: &'a Schema, runtime_dependency: String) -> ServiceView<'a> {
    let param = |m: &Model| format!("{}H", m.name);
    let params = schema
        .models
        .iter()
        .map(param)
        .collect::<Vec<_>>()
        .join(", ");
    let builders = schema
        .models
        .iter()
        .map(|given| {
            let each = |f: &dyn Fn(&Model) -> String, g: &dyn Fn(&Model) -> String| {
                schema
                    .models
                    .iter()
                    .map(|m| if m.name == given.name { g(m) } else { f(m) })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            BuilderView {
                name: given.name.clone(),
                snake: given.snake.clone(),
                params: each(&param, &|_| "Given<H>".into()),
                fields: each(&|m| format!("{0}: self.{0}", m.snake), &|m| {
                    format!("{}: Given(handlers)", m.snake)
                }),
            }
        })
        .collect();
    ServiceView {
        service: &schema.service,
        models: schema
            .models
            .iter()
            .map(|m| model_view(m, &schema.models))
            .collect(),
        runtime_dependency,
        params,
        builders,
    }
}
