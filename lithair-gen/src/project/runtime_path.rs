//! Where the generated crate finds `lithair-runtime`.
//!
//! By default, the runtime of the checkout lithair-gen was built from (found whether it
//! runs from `cargo run` or was installed with `cargo install --path`), written as a path
//! relative to the project. `--runtime-path` or `LITHAIR_RUNTIME_PATH` name another
//! checkout; `--runtime-version` depends on a published version instead.

use std::path::{Component, Path, PathBuf};

/// The runtime directory of the checkout this binary was built from, if it still exists.
pub fn built_in() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime");
    dir.join("Cargo.toml")
        .is_file()
        .then(|| dir.canonicalize().ok())
        .flatten()
}

/// The `lithair-runtime = …` dependency line for a project at `project`.
pub fn dependency(
    project: &Path,
    path: Option<&Path>,
    version: Option<&str>,
) -> Result<String, String> {
    if let Some(v) = version {
        return Ok(format!(
            "lithair-runtime = {}",
            serde_json::to_string(v).unwrap_or_default()
        ));
    }
    let from_env = std::env::var_os("LITHAIR_RUNTIME_PATH").map(PathBuf::from);
    let dir = match path.map(Path::to_path_buf).or(from_env) {
        Some(p) => {
            if !p.join("Cargo.toml").is_file() {
                return Err(format!(
                    "{} does not hold lithair-runtime (no Cargo.toml there)",
                    p.display()
                ));
            }
            p.canonicalize()
                .map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => built_in().ok_or_else(|| {
            "cannot find lithair-runtime: this lithair-gen was built from a checkout that is gone. \
             Pass --runtime-path DIR (a checkout's runtime/ folder) or --runtime-version X.Y"
                .to_string()
        })?,
    };
    let project = absolute(project);
    let rel = relative(&project, &dir).unwrap_or(dir);
    let text = rel.to_string_lossy().replace('\\', "/");
    Ok(format!(
        "lithair-runtime = {{ path = {} }}",
        serde_json::to_string(&text).unwrap_or_default()
    ))
}

fn absolute(p: &Path) -> PathBuf {
    if let Ok(c) = p.canonicalize() {
        return c;
    }
    let base = std::env::current_dir().unwrap_or_default();
    let joined = base.join(p);
    // The project folder may not exist yet: canonicalize its nearest existing parent.
    let mut existing = joined.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return joined,
        }
    }
    let mut out = existing
        .canonicalize()
        .unwrap_or_else(|_| existing.to_path_buf());
    for name in rest.iter().rev() {
        out.push(name);
    }
    out
}

/// `to` relative to `from` (both absolute).
fn relative(from: &Path, to: &Path) -> Option<PathBuf> {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return None;
    }
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c.as_os_str());
    }
    Some(out)
}
