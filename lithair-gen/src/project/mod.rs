//! A generated project on disk, and regeneration that keeps the user's work.
//!
//! [`plan`] computes, in memory, what `generate` would do to every file: create, update,
//! leave alone, delete, or refuse (a generated file edited by hand). [`apply`] then writes
//! it, each file atomically, the manifest last. `check`, `diff` and `status` are views of
//! the same plan, so they can never disagree with `generate`.

pub mod breaking;
pub mod layout;
pub mod manifest;
pub mod runtime_path;

use std::path::{Path, PathBuf};

use crate::render::{self, templates, Owner, RenderOptions};
use crate::schema;
use breaking::BreakingChange;
use manifest::{Entry, Manifest};

/// The schema file of a project.
pub const SCHEMA_FILE: &str = "lithair.yaml";

/// What went wrong while planning or writing.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// The schema has problems; the text is the rendered diagnostics.
    #[error("{0}")]
    Schema(String),
    /// A template failed.
    #[error(transparent)]
    Render(#[from] render::RenderError),
    /// Anything else, as a sentence.
    #[error("{0}")]
    Other(String),
}

/// What happens to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Written for the first time.
    Create,
    /// Rewritten: the schema or the generator changed it.
    Update,
    /// Rewritten only to restore the generator's layout (someone ran a formatter).
    Reformat,
    /// Already as it should be.
    Unchanged,
    /// The user's file, left as it is.
    UserKept,
    /// A user file whose model is gone: left in place, reported.
    Orphaned,
    /// A generated file no longer produced, unmodified: removed.
    Delete,
    /// A generated file edited by hand (or unknown to the manifest): refused without --force.
    Conflict(String),
    /// A generated file no longer produced but edited by hand: kept, reported.
    KeptModified,
}

/// One file of the plan.
#[derive(Clone, Debug)]
pub struct Planned {
    /// Path relative to the project.
    pub path: String,
    /// Owner.
    pub owner: Owner,
    /// What happens.
    pub change: Change,
    /// What is on disk now.
    pub old: Option<String>,
    /// What generate writes (None: nothing written).
    pub new: Option<String>,
    /// For handler files: their model.
    pub model: Option<String>,
}

/// Everything `generate` would do.
#[derive(Debug)]
pub struct Plan {
    /// The project folder.
    pub dir: PathBuf,
    /// Per file, sorted by path.
    pub files: Vec<Planned>,
    /// Breaking changes against the previous schema.
    pub breaking: Vec<BreakingChange>,
    /// What the other changes against the previous schema do to stored data.
    pub data_changes: Vec<String>,
    /// Whether the schema differs from the one of the last generate.
    pub schema_changed: bool,
    /// The schema text (becomes `.lithair/schema.prev.yaml`).
    pub schema_text: String,
    /// Template overrides in use, and files in `templates/` that override nothing.
    pub overrides: Vec<String>,
    /// Files in the project's `templates/` that match no template.
    pub unknown_overrides: Vec<String>,
    /// A note when the previous schema could not be read (breaking checks skipped).
    pub previous_schema_note: Option<String>,
    manifest_before: Option<Manifest>,
}

impl Plan {
    /// What handler files written for an earlier lithair-gen must change to build: a
    /// file that implements the `<Model>Hooks` trait the model files used to have (its
    /// hooks are now the runtime's `Hooks<Model>`, its actions `<Model>Actions`).
    pub fn handler_notes(&self) -> Vec<String> {
        self.files
            .iter()
            .filter(|f| f.owner == Owner::User)
            .filter_map(|f| {
                let model = f.model.as_deref()?;
                let text = f.old.as_deref()?;
                text.contains(&format!("impl {model}Hooks for")).then(|| {
                    format!(
                        "{} implements `{model}Hooks`, which the generated code no longer has: put its hooks in \
                         `impl Hooks<{model}> for {model}Handlers {{ ... }}` and its actions in \
                         `impl {model}Actions for {model}Handlers {{ ... }}` (both are in scope with \
                         `use lithair_runtime::prelude::*;` and `use crate::generated::<model>::*;`)",
                        f.path
                    )
                })
            })
            .collect()
    }

    /// Files refused without `--force`.
    pub fn conflicts(&self) -> impl Iterator<Item = &Planned> {
        self.files
            .iter()
            .filter(|f| matches!(f.change, Change::Conflict(_)))
    }

    /// Whether `generate` would change anything on disk (the `check` verdict).
    pub fn is_stale(&self) -> bool {
        self.schema_changed
            || self.manifest_before.is_none()
            || self.files.iter().any(|f| {
                matches!(
                    f.change,
                    Change::Create | Change::Update | Change::Delete | Change::Conflict(_)
                ) && (f.owner == Owner::Generated || f.change == Change::Create)
            })
    }
}

/// Options of a plan.
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// `--runtime-path`.
    pub runtime_path: Option<PathBuf>,
    /// `--runtime-version`.
    pub runtime_version: Option<String>,
}

fn read_opt(path: &Path) -> Result<Option<String>, ProjectError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ProjectError::Other(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Checks a schema text; on failure, the rendered diagnostics.
pub fn check_schema(file: &str, text: &str, color: bool) -> Result<schema::Schema, ProjectError> {
    schema::check(text)
        .map_err(|d| ProjectError::Schema(schema::render_diagnostics(file, text, &d, color)))
}

/// Works out what `generate` would do in `dir`.
pub fn plan(dir: &Path, opts: &PlanOptions, color: bool) -> Result<Plan, ProjectError> {
    let schema_path = dir.join(SCHEMA_FILE);
    let schema_text = read_opt(&schema_path)?.ok_or_else(|| {
        ProjectError::Other(format!(
            "{} not found: is {} a lithair project? Create one with `lithair-gen new DIR --schema FILE`",
            schema_path.display(),
            dir.display()
        ))
    })?;
    let schema = check_schema(SCHEMA_FILE, &schema_text, color)?;
    let manifest_before = Manifest::load(dir).map_err(ProjectError::Other)?;

    let mut previous_schema_note = None;
    let (breaking, data_changes) = match read_opt(&dir.join(manifest::PREVIOUS_SCHEMA))? {
        Some(prev) => match schema::check(&prev) {
            Ok(old) => (
                breaking::compare(&old, &schema),
                breaking::data_changes(&old, &schema),
            ),
            Err(_) => {
                previous_schema_note = Some(format!(
                    "{} no longer passes the checks; breaking-change detection was skipped",
                    manifest::PREVIOUS_SCHEMA
                ));
                Default::default()
            }
        },
        None => Default::default(),
    };

    let templates = templates::load(Some(dir))
        .map_err(|e| ProjectError::Other(format!("cannot read templates/: {e}")))?;
    let overrides = templates
        .iter()
        .filter_map(|t| match &t.source {
            templates::Source::Project(p) => Some(p.clone()),
            templates::Source::Embedded => None,
        })
        .collect();
    // A missing runtime only matters when Cargo.toml has to be written.
    let runtime_dependency = runtime_path::dependency(
        dir,
        opts.runtime_path.as_deref(),
        opts.runtime_version.as_deref(),
    );
    let cargo_missing = !dir.join("Cargo.toml").exists();
    let runtime_dependency = match runtime_dependency {
        Ok(d) => d,
        Err(e) if cargo_missing => return Err(ProjectError::Other(e)),
        Err(_) => "lithair-runtime = \"0.1\"".to_string(),
    };
    let rendered = render::render(&schema, &templates, &RenderOptions { runtime_dependency })?;

    let schema_sha = manifest::sha256(schema_text.as_bytes());
    let schema_changed = manifest_before
        .as_ref()
        .is_some_and(|m| m.schema_sha256 != schema_sha);
    let mut files = Vec::new();
    for out in &rendered {
        let old = read_opt(&dir.join(&out.path))?;
        let recorded = manifest_before.as_ref().and_then(|m| m.get(&out.path));
        let change = match (out.owner, &old) {
            (Owner::User, Some(_)) => Change::UserKept,
            (_, None) => Change::Create,
            (Owner::Generated, Some(old)) => generated_change(old, &out.contents, recorded),
        };
        let new = match change {
            Change::Create | Change::Update | Change::Reformat | Change::Conflict(_) => {
                Some(out.contents.clone())
            }
            _ => None,
        };
        files.push(Planned {
            path: out.path.clone(),
            owner: out.owner,
            change,
            old,
            new,
            model: out.model.clone(),
        });
    }
    // Files of the last generate that are no longer produced.
    if let Some(m) = &manifest_before {
        for e in &m.files {
            if rendered.iter().any(|r| r.path == e.path) {
                continue;
            }
            let old = read_opt(&dir.join(&e.path))?;
            let Some(old_text) = old.clone() else {
                continue;
            };
            let change = match e.owner {
                Owner::User => Change::Orphaned,
                Owner::Generated if unmodified(&old_text, e) => Change::Delete,
                Owner::Generated => Change::KeptModified,
            };
            files.push(Planned {
                path: e.path.clone(),
                owner: e.owner,
                change,
                old,
                new: None,
                model: e.model.clone(),
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Plan {
        dir: dir.to_path_buf(),
        files,
        breaking,
        data_changes,
        schema_changed,
        schema_text,
        overrides,
        unknown_overrides: templates::unknown_overrides(dir),
        previous_schema_note,
        manifest_before,
    })
}

/// Whether `text` is what the generator wrote as `e`, up to layout: any change but
/// whitespace, line breaks and trailing commas (`layout.rs`) is a hand edit, a comment
/// too. An entry of an earlier lithair-gen, which kept only the token hash, is judged by
/// its tokens until the file is written again.
fn unmodified(text: &str, e: &Entry) -> bool {
    if manifest::sha256(text.as_bytes()) == e.sha256 {
        return true;
    }
    match (&e.layout_sha256, &e.tokens_sha256) {
        (Some(layout), _) => layout::layout_sha256(text) == *layout,
        (None, Some(_)) => manifest::tokens_sha256(text) == e.tokens_sha256,
        (None, None) => false,
    }
}

fn generated_change(old: &str, new: &str, recorded: Option<&Entry>) -> Change {
    let Some(recorded) = recorded else {
        return if old == new {
            Change::Unchanged
        } else {
            Change::Conflict("exists but was not written by lithair-gen".into())
        };
    };
    if !unmodified(old, recorded) {
        return Change::Conflict("edited by hand since the last generate".into());
    }
    if old == new {
        Change::Unchanged
    } else if manifest::sha256(old.as_bytes()) != recorded.sha256
        && layout::layout_sha256(old) == layout::layout_sha256(new)
    {
        Change::Reformat
    } else {
        Change::Update
    }
}

/// Options of [`apply`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyOptions {
    /// Overwrite or delete generated files edited by hand.
    pub force: bool,
    /// Go ahead despite breaking changes.
    pub allow_breaking: bool,
}

/// Why `generate` refused, with everything the user needs to decide.
#[derive(Debug)]
pub enum Refusal {
    /// Generated files were edited by hand.
    HandEdits(Vec<String>),
    /// The schema change breaks stored data.
    Breaking(Vec<BreakingChange>),
}

/// Writes the plan. Refuses (writing nothing) on hand edits without `force` and on
/// breaking changes without `allow_breaking`.
pub fn apply(plan: &Plan, opts: ApplyOptions) -> Result<Result<(), Refusal>, ProjectError> {
    if !opts.force {
        let conflicts: Vec<String> = plan.conflicts().map(|f| f.path.clone()).collect();
        if !conflicts.is_empty() {
            return Ok(Err(Refusal::HandEdits(conflicts)));
        }
    }
    if !opts.allow_breaking && !plan.breaking.is_empty() {
        return Ok(Err(Refusal::Breaking(plan.breaking.clone())));
    }
    let mut entries = Vec::new();
    for f in &plan.files {
        let path = plan.dir.join(&f.path);
        match &f.change {
            Change::Create | Change::Update | Change::Reformat | Change::Conflict(_) => {
                let text = f.new.as_deref().unwrap_or_default();
                write_atomic(&path, text)?;
                entries.push(manifest::entry(&f.path, f.owner, text, f.model.clone()));
            }
            Change::Unchanged => {
                entries.push(manifest::entry(
                    &f.path,
                    f.owner,
                    f.old.as_deref().unwrap_or_default(),
                    f.model.clone(),
                ));
            }
            Change::UserKept | Change::Orphaned => {
                // Keep the hash of what lithair-gen first wrote, so `status` can tell an edited stub.
                let before = plan
                    .manifest_before
                    .as_ref()
                    .and_then(|m| m.get(&f.path))
                    .cloned();
                entries.push(before.unwrap_or_else(|| {
                    manifest::entry(
                        &f.path,
                        f.owner,
                        f.old.as_deref().unwrap_or_default(),
                        f.model.clone(),
                    )
                }));
            }
            Change::Delete => {
                std::fs::remove_file(&path).map_err(|e| {
                    ProjectError::Other(format!("cannot remove {}: {e}", path.display()))
                })?;
            }
            Change::KeptModified => {
                if opts.force {
                    std::fs::remove_file(&path).map_err(|e| {
                        ProjectError::Other(format!("cannot remove {}: {e}", path.display()))
                    })?;
                }
            }
        }
    }
    write_atomic(&plan.dir.join(manifest::PREVIOUS_SCHEMA), &plan.schema_text)?;
    let manifest = Manifest {
        generator: format!("lithair-gen {}", env!("CARGO_PKG_VERSION")),
        schema_sha256: manifest::sha256(plan.schema_text.as_bytes()),
        files: entries,
    };
    write_atomic(&plan.dir.join(manifest::PATH), &manifest.to_text())?;
    Ok(Ok(()))
}

/// Writes through a temporary file and a rename, so a crash never leaves half a file.
fn write_atomic(path: &Path, text: &str) -> Result<(), ProjectError> {
    let fail =
        |e: std::io::Error| ProjectError::Other(format!("cannot write {}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let tmp = path.with_extension(format!(
        "{}.lithair-tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    std::fs::write(&tmp, text).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// A unified diff of one planned file (old → new).
pub fn unified_diff(f: &Planned) -> String {
    let old = f.old.as_deref().unwrap_or("");
    let new = match f.change {
        Change::Delete => "",
        _ => f.new.as_deref().unwrap_or(old),
    };
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{}", f.path), &format!("b/{}", f.path))
        .to_string()
}

/// Creates a new project in `dir` from a schema file: copies it to `lithair.yaml`, then plans.
pub fn create(
    dir: &Path,
    schema_file: &Path,
    opts: &PlanOptions,
    color: bool,
) -> Result<Plan, ProjectError> {
    create_with_handlers(dir, schema_file, None, opts, color)
}

/// Like [`create`]; with `handlers`, a folder of handler files named after the models
/// (`<snake_case name>.rs`, as in `src/handlers/`), the new project starts with those
/// instead of the stubs (an example's code, say). A file that names no model is an error.
pub fn create_with_handlers(
    dir: &Path,
    schema_file: &Path,
    handlers: Option<&Path>,
    opts: &PlanOptions,
    color: bool,
) -> Result<Plan, ProjectError> {
    let text = std::fs::read_to_string(schema_file)
        .map_err(|e| ProjectError::Other(format!("cannot read {}: {e}", schema_file.display())))?;
    let schema = check_schema(&schema_file.display().to_string(), &text, color)?;
    let seeds = match handlers {
        Some(from) => handler_seeds(from, &schema)?,
        None => Vec::new(),
    };
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(ProjectError::Other(format!(
                "{} already exists and is not empty; pick a new folder, or run `lithair-gen generate --project {}` to regenerate a project",
                dir.display(),
                dir.display()
            )));
        }
    }
    write_atomic(&dir.join(SCHEMA_FILE), &text)?;
    for (name, contents) in seeds {
        write_atomic(&dir.join("src/handlers").join(name), &contents)?;
    }
    plan(dir, opts, color)
}

/// The handler files in `from`, each checked to name a model of `schema`.
fn handler_seeds(
    from: &Path,
    schema: &schema::Schema,
) -> Result<Vec<(String, String)>, ProjectError> {
    let read =
        |e: std::io::Error| ProjectError::Other(format!("cannot read {}: {e}", from.display()));
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(from).map_err(read)? {
        let path = entry.map_err(read)?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let model = name.strip_suffix(".rs").unwrap_or("");
        if !schema.models.iter().any(|m| m.snake == model) {
            let expected: Vec<String> = schema
                .models
                .iter()
                .map(|m| format!("{}.rs", m.snake))
                .collect();
            return Err(ProjectError::Other(format!(
                "{}: a handler file is named after its model; expected one of {}",
                path.display(),
                expected.join(", ")
            )));
        }
        let contents = std::fs::read_to_string(&path)
            .map_err(|e| ProjectError::Other(format!("cannot read {}: {e}", path.display())))?;
        seeds.push((name, contents));
    }
    seeds.sort();
    Ok(seeds)
}
