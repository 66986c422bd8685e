//! From a checked schema to the files of the generated crate, all in memory.
//!
//! Nothing here touches the disk (but reading template overrides): the `project` module
//! decides what to write. Every generated `.rs` is parsed with `syn` and printed with
//! `prettyplease`; user-owned stubs are only parsed (printing would drop their comments).
//! A template that yields invalid Rust fails the whole rendering with the template's name
//! and the line, so no broken file ever reaches the disk.

pub mod api_docs;
pub mod context;
pub mod openapi;
pub mod templates;

use handlebars::Handlebars;
use serde::Serialize;

use crate::schema::model::Schema;
use templates::Template;

/// Who owns a file of the generated crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// Rewritten on every generate; hand edits are detected.
    Generated,
    /// Written once, then the user's.
    User,
}

/// One rendered file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputFile {
    /// Path relative to the project, with `/`.
    pub path: String,
    /// Who owns it.
    pub owner: Owner,
    /// Its full text.
    pub contents: String,
    /// The model it belongs to, for handler files.
    pub model: Option<String>,
}

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template does not compile.
    #[error("template {template} is not valid handlebars: {message}")]
    Template { template: String, message: String },
    /// Rendering a template failed (e.g. a missing variable).
    #[error("template {template} failed to render: {message}")]
    Render { template: String, message: String },
    /// A template produced Rust that does not parse.
    #[error("template {template} produced invalid Rust for {path}, at line {line}: {message}\n  {line} | {snippet}")]
    InvalidRust {
        template: String,
        path: String,
        line: usize,
        message: String,
        snippet: String,
    },
}

/// Options of a rendering.
#[derive(Clone, Debug)]
pub struct RenderOptions {
    /// The `lithair-runtime = …` line of the generated Cargo.toml.
    pub runtime_dependency: String,
}

struct Engine<'t> {
    hb: Handlebars<'static>,
    templates: &'t [Template],
}

impl Engine<'_> {
    fn new(templates: &[Template]) -> Result<Engine<'_>, RenderError> {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        hb.register_helper("toml_str", Box::new(toml_str));
        for t in templates {
            hb.register_template_string(t.name, &t.text)
                .map_err(|e| RenderError::Template {
                    template: origin(t),
                    message: e.to_string(),
                })?;
        }
        Ok(Engine { hb, templates })
    }

    fn template(&self, name: &str) -> String {
        self.templates
            .iter()
            .find(|t| t.name == name)
            .map(origin)
            .unwrap_or_else(|| name.to_string())
    }

    fn render<T: Serialize>(&self, name: &str, data: &T) -> Result<String, RenderError> {
        self.hb.render(name, data).map_err(|e| RenderError::Render {
            template: self.template(name),
            message: e.to_string(),
        })
    }

    /// Renders a generated `.rs`: parse, then pretty-print.
    fn rust<T: Serialize>(&self, name: &str, path: &str, data: &T) -> Result<String, RenderError> {
        let text = self.render(name, data)?;
        let file = self.parse(name, path, &text)?;
        Ok(space_items(&prettyplease::unparse(&file)))
    }

    /// Renders a user-owned `.rs`: parsed to prove it is valid, kept as written.
    fn rust_stub<T: Serialize>(
        &self,
        name: &str,
        path: &str,
        data: &T,
    ) -> Result<String, RenderError> {
        let text = self.render(name, data)?;
        self.parse(name, path, &text)?;
        Ok(tidy(&text))
    }

    fn parse(&self, name: &str, path: &str, text: &str) -> Result<syn::File, RenderError> {
        syn::parse_file(text).map_err(|e| {
            let line = e.span().start().line;
            RenderError::InvalidRust {
                template: self.template(name),
                path: path.to_string(),
                line,
                message: e.to_string(),
                snippet: text
                    .lines()
                    .nth(line.saturating_sub(1))
                    .unwrap_or("")
                    .trim()
                    .to_string(),
            }
        })
    }
}

fn origin(t: &Template) -> String {
    match &t.source {
        templates::Source::Embedded => t.name.to_string(),
        templates::Source::Project(p) => p.clone(),
    }
}

/// `{{toml_str x}}`: a TOML basic string.
fn toml_str(
    h: &handlebars::Helper,
    _: &Handlebars,
    _: &handlebars::Context,
    _: &mut handlebars::RenderContext,
    out: &mut dyn handlebars::Output,
) -> handlebars::HelperResult {
    let s = h.param(0).and_then(|p| p.value().as_str()).unwrap_or("");
    out.write(&serde_json::to_string(s).unwrap_or_default())?;
    Ok(())
}

/// prettyplease prints items back to back; put a blank line between items (and after the
/// module docs), as rustfmt-formatted hand-written code has.
fn space_items(text: &str) -> String {
    const ITEM_STARTS: &[&str] = &[
        "///", "#[", "pub ", "fn ", "impl", "struct ", "enum ", "trait ", "use ", "mod ", "const ",
        "static ", "type ",
    ];
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::with_capacity(text.len() + lines.len());
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            let prev = lines[i - 1].trim();
            let cur = line.trim_start();
            let indent = |l: &str| l.len() - l.trim_start().len();
            let starts_item = ITEM_STARTS.iter().any(|s| cur.starts_with(s));
            let after_item = prev.ends_with('}')
                || prev.ends_with(';')
                || (prev.starts_with("//!") && !cur.starts_with("//!"));
            let same_group = (prev.starts_with("use ") && cur.starts_with("use "))
                || (prev.starts_with("pub mod ")
                    && cur.starts_with("pub mod ")
                    && prev.ends_with(';'))
                || prev.starts_with("#[");
            if starts_item && after_item && !same_group && indent(lines[i - 1]) >= indent(line) {
                out.push('\n');
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Collapses runs of blank lines left by template conditionals; ends with one newline.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        if line.trim().is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
            out.push('\n');
        } else {
            blank = 0;
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    let trimmed = out.trim_matches('\n');
    format!("{trimmed}\n")
}

/// Renders every file of the crate, sorted by path.
pub fn render(
    schema: &Schema,
    templates: &[Template],
    opts: &RenderOptions,
) -> Result<Vec<OutputFile>, RenderError> {
    let engine = Engine::new(templates)?;
    let view = context::service_view(schema, opts.runtime_dependency.clone());
    let mut files = Vec::new();
    let mut add = |path: &str, owner: Owner, contents: String, model: Option<&str>| {
        files.push(OutputFile {
            path: path.to_string(),
            owner,
            contents,
            model: model.map(String::from),
        });
    };

    add(
        "Cargo.toml",
        Owner::User,
        tidy(&engine.render("Cargo.toml.hbs", &view)?),
        None,
    );
    add(
        "lithair.toml",
        Owner::User,
        tidy(&engine.render("lithair.toml.hbs", &view)?),
        None,
    );
    add(
        "src/main.rs",
        Owner::User,
        engine.rust_stub("main.rs.hbs", "src/main.rs", &view)?,
        None,
    );
    add(
        "src/generated/mod.rs",
        Owner::Generated,
        engine.rust("mod.rs.hbs", "src/generated/mod.rs", &view)?,
        None,
    );
    add(
        "src/generated/handlers.rs",
        Owner::Generated,
        engine.rust("handlers.rs.hbs", "src/generated/handlers.rs", &view)?,
        None,
    );
    let mut spec = serde_json::to_string_pretty(schema).unwrap_or_default();
    spec.push('\n');
    add("src/generated/spec.json", Owner::Generated, spec, None);
    let document = openapi::document(schema);
    let mut api = serde_json::to_string_pretty(&document).unwrap_or_default();
    api.push('\n');
    add("openapi.json", Owner::Generated, api, None);
    add(
        "docs/API.md",
        Owner::Generated,
        api_docs::document(schema, &document),
        None,
    );
    for m in &view.models {
        let path = format!("src/generated/{}.rs", m.snake);
        add(
            &path,
            Owner::Generated,
            engine.rust("model.rs.hbs", &path, m)?,
            None,
        );
        let path = format!("src/handlers/{}.rs", m.snake);
        add(
            &path,
            Owner::User,
            engine.rust_stub("handler.rs.hbs", &path, m)?,
            Some(m.name),
        );
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}
