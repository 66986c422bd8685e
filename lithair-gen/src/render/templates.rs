//! The handlebars templates of the generated crate: embedded at build time, and
//! overridable per project by a file of the same name in the project's `templates/`.

use std::path::Path;

/// Every template, by file name, with its embedded text.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "Cargo.toml.hbs",
        include_str!("../../../templates/Cargo.toml.hbs"),
    ),
    (
        "handler.rs.hbs",
        include_str!("../../../templates/handler.rs.hbs"),
    ),
    (
        "handlers.rs.hbs",
        include_str!("../../../templates/handlers.rs.hbs"),
    ),
    (
        "lithair.toml.hbs",
        include_str!("../../../templates/lithair.toml.hbs"),
    ),
    (
        "main.rs.hbs",
        include_str!("../../../templates/main.rs.hbs"),
    ),
    ("mod.rs.hbs", include_str!("../../../templates/mod.rs.hbs")),
    (
        "model.rs.hbs",
        include_str!("../../../templates/model.rs.hbs"),
    ),
];

/// Where a template's text came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The copy built into lithair-gen.
    Embedded,
    /// A file of the project's `templates/` folder (relative path).
    Project(String),
}

/// A template's name, text and origin.
#[derive(Clone, Debug)]
pub struct Template {
    /// File name, e.g. `model.rs.hbs`.
    pub name: &'static str,
    /// The handlebars text.
    pub text: String,
    /// Embedded or overridden.
    pub source: Source,
}

/// The templates for a project: embedded ones, replaced by `project/templates/<name>` where present.
pub fn load(project: Option<&Path>) -> std::io::Result<Vec<Template>> {
    let mut out = Vec::new();
    for (name, text) in EMBEDDED {
        let over = project.map(|p| p.join("templates").join(name));
        match over {
            Some(path) if path.is_file() => out.push(Template {
                name,
                text: std::fs::read_to_string(&path)?,
                source: Source::Project(format!("templates/{name}")),
            }),
            _ => out.push(Template {
                name,
                text: text.to_string(),
                source: Source::Embedded,
            }),
        }
    }
    Ok(out)
}

/// Files in the project's `templates/` that override nothing (likely a typo in the name).
pub fn unknown_overrides(project: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(project.join("templates")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !EMBEDDED.iter().any(|(t, _)| t == n))
        .collect();
    names.sort();
    names
}
